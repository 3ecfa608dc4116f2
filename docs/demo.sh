#!/usr/bin/env bash
# The main job: run a container, checkpoint it, restore it and show it continuing.
set -euo pipefail
echo "demo: not wired yet" >&2
exit 1
