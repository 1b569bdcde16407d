#!/usr/bin/env bash
# Reproduce the paper's table4_comparison (see README.md here). Extra arguments are passed to eald-run, e.g.
#   experiments/table4_comparison.sh dataset=eald dataset.root=/data/EALD backbone.llama_path=/w/llama-2-7b-chat-hf ...
# then: eald-report multirun/table4_comparison --paper <table>
set -euo pipefail
exec eald-run -m experiment=table4_comparison hydra.sweep.dir=multirun/table4_comparison "$@"
