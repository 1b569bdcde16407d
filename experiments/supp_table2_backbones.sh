#!/usr/bin/env bash
# Reproduce the paper's supp_table2_backbones (see README.md here). Extra arguments are passed to eald-run, e.g.
#   experiments/supp_table2_backbones.sh dataset=eald dataset.root=/data/EALD backbone.llama_path=/w/llama-2-7b-chat-hf ...
# then: eald-report multirun/supp_table2_backbones --paper <table>
set -euo pipefail
exec eald-run -m experiment=supp_table2_backbones hydra.sweep.dir=multirun/supp_table2_backbones "$@"
