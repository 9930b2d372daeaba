from varbench.cli import main

main()
