#!/usr/bin/env bash
# Rebuild the shipped zoo: data builders + training commands, exactly as recorded in each card.
# Wall time on the 2-core dev machine: about 90 minutes for all four (attention trains ~3x slower per
# iteration than MLP mixing on this CPU; hrm-sudoku and maze-att were trained side by side with
# OMP_NUM_THREADS=1 each, so their budgets are smaller). The 6x6 pair (sudoku6-mlp, sudoku6-att) is the
# matched-accuracy TRM-MLP / TRM-attention ablation: same data, same model config, the new training
# path (EMA, fresh augmentations, fp32 attention core), about an hour each on one thread side by side.
# Every run writes a training checkpoint under $DATA/runs/; an interrupted one continues with the same
# command plus `--resume $DATA/runs/NAME.pt`. Usage: scripts/zoo.sh [name ...]
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
if has sudoku6-mlp || has sudoku6-att || has hrm-sudoku6; then
  [ -f "$DATA/sudoku6/test/dataset.json" ] || $CG data sudoku "$DATA/sudoku6" --size 6 --givens 14 --train-puzzles 10000 --num-aug 0 --test-puzzles 1000 --seed 0
  # The fresh probe scored into the cards: the same data command with another seed.
  [ -f "$DATA/sudoku6-seed1/test/dataset.json" ] || $CG data sudoku "$DATA/sudoku6-seed1" --size 6 --givens 14 --train-puzzles 10000 --num-aug 0 --test-puzzles 1000 --seed 1
fi
if has maze-att; then
  [ -f "$DATA/maze11/test/dataset.json" ] || $CG data maze "$DATA/maze11" --size 11 --train-mazes 20000 --test-mazes 1000 --loops 0.1 --seed 0
fi
if has maze9-mlp || has maze9-att; then
  [ -f "$DATA/maze9/test/dataset.json" ] || $CG data maze "$DATA/maze9" --size 9 --train-mazes 20000 --test-mazes 1000 --loops 0.1 --seed 0
  [ -f "$DATA/maze9-seed1/test/dataset.json" ] || $CG data maze "$DATA/maze9-seed1" --size 9 --train-mazes 0 --test-mazes 1000 --loops 0.1 --seed 1
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
S6="--hidden-size 128 --expansion 2 --h-cycles 2 --l-cycles 2 --halt-max-steps 8 --batch-size 64 --lr 2e-3 --lr-min-ratio 0.1 --ema-rate 0.999"
S6="$S6 --augment sudoku --eval-limit 300 --checkpoint-every 250 --probe $DATA/sudoku6-seed1 --seed 0"
has sudoku6-mlp && OMP_NUM_THREADS=1 $CG train --data "$DATA/sudoku6" --out $ZOO/sudoku6-mlp --name sudoku6-mlp --arch trm --mlp-t --pos-encodings none \
  $S6 --iterations 2500 --eval-every 250 --checkpoint "$DATA/runs/sudoku6-mlp.pt" && ship sudoku6-mlp "$DATA/sudoku6"
has sudoku6-att && OMP_NUM_THREADS=1 $CG train --data "$DATA/sudoku6" --out $ZOO/sudoku6-att --name sudoku6-att --arch trm --pos-encodings rope --num-heads 4 \
  --fp32-attention $S6 --iterations 7000 --eval-every 700 --stop-after 5500 --ship-stopped --checkpoint "$DATA/runs/sudoku6-att.pt" && ship sudoku6-att "$DATA/sudoku6"
has hrm-sudoku6 && OMP_NUM_THREADS=1 $CG train --data "$DATA/sudoku6" --out $ZOO/hrm-sudoku6 --name hrm-sudoku6 --arch hrm --pos-encodings rope \
  --num-heads 4 --fp32-attention --train-dtype float32 --h-layers 2 --l-layers 2 $S6 --iterations 7000 --eval-every 700 --checkpoint "$DATA/runs/hrm-sudoku6.pt" \
  && ship hrm-sudoku6 "$DATA/sudoku6"
has maze9-mlp && OMP_NUM_THREADS=1 $CG train --data "$DATA/maze9" --out $ZOO/maze9-mlp --name maze9-mlp --arch trm --mlp-t --pos-encodings none \
  --train-dtype float32 --hidden-size 128 --expansion 2 --h-cycles 2 --l-cycles 2 --halt-max-steps 8 --batch-size 64 --lr 2e-3 \
  --lr-min-ratio 0.1 --ema-rate 0.999 --augment maze --iterations 4000 --eval-every 250 --eval-limit 300 --checkpoint-every 250 \
  --probe "$DATA/maze9-seed1" --seed 0 --checkpoint "$DATA/runs/maze9-mlp.pt" && ship maze9-mlp "$DATA/maze9"
# maze9-att: the maze9-mlp data and recipe with attention + RoPE, bf16 training (this CPU has AVX512-BF16)
# with the fp32 attention core, a lower lr and a longer warm-up (the MLP's lr kept it on the copy plateau).
has maze9-att && OMP_NUM_THREADS=1 $CG train --data "$DATA/maze9" --out $ZOO/maze9-att --name maze9-att --arch trm --pos-encodings rope \
  --num-heads 4 --fp32-attention --train-dtype bfloat16 --compile --hidden-size 128 --expansion 2 --h-cycles 2 --l-cycles 2 \
  --halt-max-steps 8 --batch-size 64 --lr 3e-4 --lr-warmup 1000 --lr-min-ratio 0.1 --ema-rate 0.999 --augment maze --iterations 12000 \
  --eval-every 250 --eval-limit 300 --checkpoint-every 250 --probe "$DATA/maze9-seed1" --seed 0 --checkpoint "$DATA/runs/maze9-att.pt" \
  && ship maze9-att "$DATA/maze9"

true
