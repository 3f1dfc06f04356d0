#!/usr/bin/env bash
# An approximation of the bash v3 hook, for comparison only (the v3 script itself is not in this repo):
# read the payload, pull fields out with jq, check the meta, build the events line with jq, append it.
# Three jq runs and a date per managed event; one jq run for an unmanaged session.
set -u
input=$(cat)
session_id=$(printf '%s' "$input" | jq -r '.session_id // empty')
[ -n "$session_id" ] || exit 0
dir=${CSD_WORKERS_DIR:-/tmp/claude-workers}
[ -f "$dir/$session_id.meta" ] || exit 0
hook=$(printf '%s' "$input" | jq -r '.hook_event_name // empty')
case $hook in
  SessionStart) event=session_start ;;
  UserPromptSubmit) event=user_prompt_submit ;;
  PreToolUse) event=pre_tool_use ;;
  Stop) event=stop ;;
  SessionEnd) event=session_end ;;
  *) exit 0 ;;
esac
ts=$(date -u +%Y-%m-%dT%H:%M:%SZ)
printf '%s' "$input" | jq -c --arg ts "$ts" --arg event "$event" \
  '{ts: $ts, event: $event, cwd: .cwd, tool: .tool_name, tool_input: .tool_input}' >> "$dir/$session_id.events.jsonl"
exit 0
