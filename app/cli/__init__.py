"""`carrygate`: the command line. One module a command group, all printing through `app/cli/console.py`.

- `data.py`      carrygate data sudoku | maze | arc   (datasets in the official folder layout)
- `train.py`     carrygate train                        (and its model card)
- `predict.py`   carrygate predict | export             (answers; the single-step ONNX artifact)
- `evaluate.py`  carrygate evaluate | sweep             (in-process evaluation and its tables)
- `validate.py`  carrygate validate | calibrate         (signal validity; refit the predicted drop)
- `service.py`   carrygate serve | worker | migrate | gate   (the service and the release-pipeline client)
- `demo.py`      carrygate demo                         (the zoo sweep through the API)
- `recommend.py` carrygate recommend                    (the cheapest compression that still reasons)
- `keys.py`      carrygate keys create | list | revoke
- `verdicts.py`  the verdict table `gate` and `demo` print
"""

from __future__ import annotations

import typer

from carrygate.app.cli import data, demo, evaluate, keys, predict, recommend, service, train, validate

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Decide whether a compressed recursive reasoner (TRM / HRM) still reasons before it ships.")
app.add_typer(data.data_app, name="data")
for group in (train.commands, predict.commands, evaluate.commands, demo.commands, service.commands, validate.commands,
              recommend.commands):
    app.add_typer(group)
app.add_typer(keys.keys_app, name="keys")


def main() -> None:
    app()
