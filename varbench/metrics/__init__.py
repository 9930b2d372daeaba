"""Metrics: DINO, CLIP-I, CLIP-T (canonical and compatible modes), DIV, PRES, statistics."""
