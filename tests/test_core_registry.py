from __future__ import annotations

import os
import subprocess
import sys

import pytest

from varbench.errors import UserError
from varbench.method import Method
from varbench.registry import available, get_method, register_method


def test_builtin_entry_points_are_listed_without_importing_them():
    names = available()
    for name in ("arbooth", "dreambooth", "custom_diffusion", "textual_inversion", "toy"):
        assert name in names
    assert names["dreambooth"] == "baselines.dreambooth:DreamBooth"


def test_decorated_plugin_module_is_found():
    cls = get_method("toy")
    assert cls.name == "toy" and cls.version == "1"


def test_unknown_method_suggests_close_names():
    with pytest.raises(UserError) as err:
        get_method("dreambooht")
    assert "unknown method 'dreambooht'" in err.value.line()
    assert "Did you mean 'dreambooth'" in err.value.line()


def test_decorator_rejects_non_methods_and_name_clashes():
    with pytest.raises(UserError, match="not a varbench Method"):
        register_method(int)  # type: ignore[arg-type]

    class Other(Method):
        name = "toy"
        version = "1"
        Config = dict

    with pytest.raises(UserError, match="registered twice"):
        register_method(Other)


@pytest.mark.slow
def test_separate_package_appears_in_list_methods(example_site):
    """The README's 'Adding a method' route: pip-install a package that declares an entry
    point in group varbench.methods (the example_site fixture); `varbench list methods`
    shows it and it runs."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(example_site), os.environ["PYTHONPATH"]])}
    listed = subprocess.run([sys.executable, "-m", "varbench", "list", "methods"], env=env,
                            capture_output=True, text=True, check=True)
    assert "reference_copy" in listed.stdout and "varbench_example:ReferenceCopy" in listed.stdout
    loaded = subprocess.run([sys.executable, "-c",
                             "from varbench.registry import get_method; m = get_method('reference_copy'); "
                             "print(m.name, m.version, m().subject_phrase('dog'))"],
                            env=env, capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == ["reference_copy", "1", "dog"]
