"""Studies that reproduce the thesis' comparisons on our data (each a ``python -m`` module).

    python -m handops_models.experiments.compare_2d --out runs/compare_2d     chapters 3-5: Tables 3.1, 4.1, 5.1, 5.2
"""
