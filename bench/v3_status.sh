#!/usr/bin/env bash
# An approximation of the bash v3 `status`, for comparison only (the v3 script is not in this repo):
# find the meta by name with jq, ask tmux whether the session exists, read the last events line with jq.
set -u
name=$1
dir=${CSD_WORKERS_DIR:-/tmp/claude-workers}
sid=""
for meta in "$dir"/*.meta; do
  [ -e "$meta" ] || continue
  if [ "$(jq -r .tmux_name "$meta")" = "$name" ]; then
    sid=$(jq -r .session_id "$meta")
    break
  fi
done
[ -n "$sid" ] || { echo "unknown worker $name" >&2; exit 1; }
sock=()
[ -n "${CSD_TMUX_SOCKET:-}" ] && sock=(-S "$CSD_TMUX_SOCKET")
tmux "${sock[@]}" has-session -t "=$name" 2>/dev/null || { echo gone; exit 0; }
last=$(tail -n 1 "$dir/$sid.events.jsonl" 2>/dev/null | jq -r '.event // empty')
case $last in
  stop) echo idle ;;
  session_end) echo terminated ;;
  "") echo unknown ;;
  *) echo working ;;
esac
