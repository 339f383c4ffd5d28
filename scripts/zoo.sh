#!/usr/bin/env bash
# Rebuild the shipped zoo: data builders + training commands, exactly as recorded in each card.
# Wall time on the 2-core dev machine: about 90 minutes for all four (attention trains ~3x slower per
# iteration than MLP mixing on this CPU; hrm-sudoku and maze-att were trained side by side with
# OMP_NUM_THREADS=1 each, so their budgets are smaller). Usage: scripts/zoo.sh [name ...]
set -euo pipefail
cd "$(dirname "$0")/.."
CG=${CG:-.venv/bin/carrygate}
DATA=${DATA:-.data}
ZOO=models/zoo
names=("$@")
has() { [ ${#names[@]} -eq 0 ] || [[ " ${names[*]} " == *" $1 "* ]]; }

if has sudoku-mlp || has sudoku-att || has hrm-sudoku; then
  [ -f "$DATA/sudoku30/test/dataset.json" ] || $CG data sudoku "$DATA/sudoku30" --givens 30 --train-puzzles 2000 --num-aug 9 --test-puzzles 1000 --seed 0
fi
if has maze-att; then
  [ -f "$DATA/maze11/test/dataset.json" ] || $CG data maze "$DATA/maze11" --size 11 --train-mazes 20000 --test-mazes 1000 --loops 0.1 --seed 0
fi

# Each zoo folder ships its held-out split, so `carrygate predict` reproduces the card offline.
ship() { mkdir -p "$ZOO/$1/data"; cp -r "$2/test" "$ZOO/$1/data/"; cp "$2/identifiers.json" "$2/build.json" "$ZOO/$1/data/"; }

COMMON="--hidden-size 128 --expansion 2 --halt-max-steps 8 --batch-size 96 --lr 2e-3 --seed 0"
has sudoku-mlp && $CG train --data "$DATA/sudoku30" --out $ZOO/sudoku-mlp --name sudoku-mlp --arch trm --mlp-t --pos-encodings none \
  --h-cycles 2 --l-cycles 3 --iterations 1500 $COMMON && ship sudoku-mlp "$DATA/sudoku30"
has sudoku-att && $CG train --data "$DATA/sudoku30" --out $ZOO/sudoku-att --name sudoku-att --arch trm --pos-encodings rope --num-heads 4 \
  --h-cycles 2 --l-cycles 3 --iterations 1000 $COMMON && ship sudoku-att "$DATA/sudoku30"
has hrm-sudoku && $CG train --data "$DATA/sudoku30" --out $ZOO/hrm-sudoku --name hrm-sudoku --arch hrm --pos-encodings rope --num-heads 4 \
  --h-cycles 2 --l-cycles 2 --h-layers 2 --l-layers 2 --iterations 400 $COMMON && ship hrm-sudoku "$DATA/sudoku30"
has maze-att && $CG train --data "$DATA/maze11" --out $ZOO/maze-att --name maze-att --arch trm --pos-encodings rope --num-heads 4 \
  --h-cycles 2 --l-cycles 2 --iterations 400 $COMMON && ship maze-att "$DATA/maze11"
true
