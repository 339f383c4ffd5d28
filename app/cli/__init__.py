"""`carrygate`: the command line. One module a command group, all printing through `app/cli/console.py`.

- `data.py`      carrygate data sudoku | maze | arc   (datasets in the official folder layout)
- `train.py`     carrygate train                        (and its model card)
- `predict.py`   carrygate predict | export             (answers; the single-step ONNX artifact)
- `evaluate.py`  carrygate evaluate | sweep             (in-process evaluation and its tables)
- `validate.py`  carrygate validate | calibrate         (signal validity; refit the predicted drop)
- `service.py`   carrygate serve | worker | migrate | gate   (the service and the release-pipeline client)
- `demo.py`      carrygate demo                         (the zoo sweep through the API)
- `keys.py`      carrygate keys create | list | revoke
- `verdicts.py`  the verdict table `gate` and `demo` print
`carrygate recommend` comes from `app/cli_recommend.py` (issue 16).
"""

from __future__ import annotations

import typer

from carrygate.app.cli import data, demo, evaluate, keys, predict, service, train, validate
from carrygate.app.cli_recommend import recommend_command

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Decide whether a compressed recursive reasoner (TRM / HRM) still reasons before it ships.")
app.add_typer(data.data_app, name="data")
recommend = typer.Typer()
recommend.command("recommend")(recommend_command)
for group in (train.commands, predict.commands, evaluate.commands, demo.commands, service.commands, validate.commands, recommend):
    app.add_typer(group)
app.add_typer(keys.keys_app, name="keys")


def main() -> None:
    app()
