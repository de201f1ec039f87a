"""Print every network's parameter count for the ``paper`` and ``tiny`` configs (a markdown table).

    python -m handops_models.nets

Models are built on the meta device: no memory, no time, the counts are exact.
"""

from __future__ import annotations

import argparse

import torch

from handops_models.nets import MODELS, build_model, count_parameters

# (registry name, label, overrides): SiaPose appears with the head counts of Tables 5.1 / 5.2.
ROWS = [
    ("cpm", "CPM", {}),
    ("hourglass", "Stacked Hourglass", {}),
    ("agmn", "AGMN", {}),
    ("rmgmn", "R-MGMN", {}),
    ("siapose", "SiaPose 1-head (CPM)", {"heads": 1}),
    ("siapose", "SiaPose 5-head (CPM)", {"heads": 5}),
    ("siapose", "SiaPose 10-head (CPM)", {"heads": 10}),
    ("siapose", "SiaPose 1-head (Hourglass)", {"heads": 1, "estimator": "hourglass"}),
    ("siapose", "SiaPose 10-head (Hourglass)", {"heads": 10, "estimator": "hourglass"}),
    ("sharedgcn", "SharedWeight GCN (CPM)", {}),
    ("rsiapose", "R-SiaPose 10-head (CPM)", {}),
    ("mesh-identity", "Mesh estimator, identity-aware (ch. 6)", {}),
    ("mesh-baseline", "Mesh baseline + confidence (ch. 6)", {}),
    ("detector2d", "2-D detector, Hourglass + BCE (ch. 6)", {}),
]


def parameter_table() -> list[dict]:
    """One dict per row: label, model, and for each preset the parameter count and the sizes."""
    rows = []
    for name, label, overrides in ROWS:
        assert name in MODELS
        row = {"label": label, "model": name}
        for config in ("paper", "tiny"):
            with torch.device("meta"):
                model = build_model(name, config, **overrides)
            row[config] = count_parameters(model)
            kernel = getattr(model.config, "kernel_size", None)
            output = getattr(model, "map_size", "mesh")
            row[f"{config}_sizes"] = f"{model.input_size} -> {output}" + (f", k {kernel}" if kernel else "")
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ["| network | paper parameters | paper input -> maps | tiny parameters | tiny input -> maps |",
             "|---|---:|---|---:|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['paper']:,} | {r['paper_sizes']} | {r['tiny']:,} | {r['tiny_sizes']} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    print(format_table(parameter_table()))


if __name__ == "__main__":
    main()
