#!/usr/bin/env bash
# Reproduce the paper's table3_modalities (see README.md here). Extra arguments are passed to eald-run, e.g.
#   experiments/table3_modalities.sh dataset=eald dataset.root=/data/EALD backbone.llama_path=/w/llama-2-7b-chat-hf ...
# then: eald-report multirun/table3_modalities --paper <table>
set -euo pipefail
exec eald-run -m experiment=table3_modalities hydra.sweep.dir=multirun/table3_modalities "$@"
