#!/usr/bin/env bash
# The GPU recipes, run for real on a CUDA machine: does each reference recipe train there, how
# fast, and to what validation AUC in a few epochs. CPU CI cannot check any of this.
#
#   bash bench/gpu_recipes.sh DATA OUT [EPOCHS]
#
# DATA: a Kermany chest_xray folder (train/ carries the patient-level validation split; no test
# split is used). OUT: where the summary, logs and history.csv files go; run folders (checkpoints)
# go to a temporary folder. Each recipe runs as written except for the epoch cap, and for
# seed_vgg16 model.pretrained=false where torchvision's ImageNet VGG16 file is not on the machine
# (it needs a download): that run then checks the pipeline and speed only, and says so.
# Results with the exact command: docs/RESULTS.md "GPU recipes".
set -uo pipefail
DATA=${1:?usage: bench/gpu_recipes.sh DATA OUT [EPOCHS]}
OUT=${2:?usage: bench/gpu_recipes.sh DATA OUT [EPOCHS]}
EPOCHS=${3:-5}
RUNS=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
summary="$OUT/summary.txt"

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, lightning, timm; print('torch', torch.__version__, '| lightning', lightning.__version__, '| timm', timm.__version__)"
  echo "data: $DATA, epochs per recipe: $EPOCHS"
} | tee "$summary"

train() {  # name, then the arguments of `pneumocxr train`
  local name=$1
  shift
  local start=$SECONDS
  python3 -m pneumocxr train "$@" --set data.root="$DATA" train.max_epochs="$EPOCHS" \
    --out "$RUNS/$name" >"$OUT/$name.log" 2>&1
  local rc=$?
  cp "$RUNS/$name/history.csv" "$OUT/$name.history.csv" 2>/dev/null
  local best
  best=$(python3 - "$RUNS/$name/history.csv" <<'EOF'
import csv, sys
try:
    rows = list(csv.DictReader(open(sys.argv[1])))
except OSError:
    sys.exit(print("no history.csv"))
aucs = [float(r["val_auc"]) for r in rows if r.get("val_auc")]
print(f"{len(rows)} epochs, best val AUC {max(aucs):.4f}" if aucs else f"{len(rows)} epochs, no val AUC")
EOF
  )
  echo "$name: exit $rc, $((SECONDS - start)) s wall, $best" | tee -a "$summary"
  grep -E "ERROR|Error|precision|bf16" "$OUT/$name.log" | head -5 | sed "s/^/    /" | tee -a "$summary"
}

train seed_custom_cnn_fp32 --config configs/seed_custom_cnn.yaml
train seed_custom_cnn_bf16 --config configs/seed_custom_cnn.yaml --set train.precision=auto train.channels_last=true
if python3 -c "import torch, sys; from torchvision.models import VGG16_Weights as W; \
    sys.exit(0 if (torch.hub.get_dir() and __import__('os').path.exists(__import__('os').path.join(torch.hub.get_dir(), 'checkpoints', W.IMAGENET1K_V1.url.rsplit('/', 1)[1]))) else 1)"; then
  train seed_vgg16 --config configs/seed_vgg16.yaml
else
  echo "seed_vgg16: ImageNet VGG16 weights not on this machine: random frozen base (speed/pipeline check only)" | tee -a "$summary"
  train seed_vgg16_random_base --config configs/seed_vgg16.yaml --set model.pretrained=false train.precision=auto
fi
train cpu_fast_on_gpu --config configs/cpu_fast.yaml
rm -rf "$RUNS"
