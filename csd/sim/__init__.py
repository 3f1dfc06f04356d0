"""A simulated Claude Code worker: a terminal program that, seen from csd, behaves like the Claude Code TUI without spending tokens.

It imitates Claude Code 2.1.330 as observed in tmux (shared/claude-code/FACTS.md, tests/e2e/FINDINGS.md):

* the command line (``--session-id``, ``--resume``, ``--continue``, ``--settings``, ``--plugin-dir``,
  ``--dangerously-skip-permissions`` refused as root without ``IS_SANDBOX=1``; unknown options ignored);
* the start-up (about 0.5 s to SessionStart by default), the workspace-trust dialog (forced, or decided by
  ``~/.claude.json`` like the real one, which records the acceptance there) and the bypass-permissions dialog;
* hooks with Claude Code's payloads: SessionStart (``resume`` carries ``context_tokens`` & co. and no
  ``model``; ``clear`` has no ``model``), UserPromptSubmit (at submit time, even while busy), PreToolUse,
  SubagentStart, PostToolUse, PostToolBatch, Stop (``last_assistant_message``, ``background_tasks``),
  SubagentStop, Notification (idle_prompt), PreCompact, PostCompact and SessionEnd;
* background agents (``TOOL:Agent:<json>``, ``BG:<s>``): Stop with the agent running, then SubagentStop, a
  synthetic ``<task-notification>`` turn and a second Stop; ``BG:0`` gives the quick order (SubagentStop
  before the first Stop, which then lists no background task);
* the transcript, in Claude Code's format and timing: the user prompt and tool_use lines are on disk before
  their hooks, but the last tool result, the final assistant text and ``stop_hook_summary`` land about 50 ms
  after the Stop hooks returned;
* cost: ``usage`` on assistant lines (priced like the mock model), the settings' ``statusLine`` command run when
  2.1.330 runs it (start-up, ~0.3 s after Stop/StopFailure, after ``/clear`` and ``/compact``) with its
  per-session ``cost.total_cost_usd``, and ``cost-state`` lines at a session's end (``/clear``, ``/exit``, a kill);
* the screen: header, ``❯`` + NBSP input line, ``esc to interrupt`` in the footer while busy, queued prompts,
  and the exact dialog texts.

Prompts are scripted with directives and timings tuned with environment variables (both listed in
``csd.sim.options.HELP``, which `--help` prints). The program is ``csd.sim.main:main`` (``csd-simworker``,
``python -m csd.sim``). It stands in for a separate program, so it imports none of csd's engine or commands:
only the standard library and csd's pure modules (``csd.clock``, ``csd.events``, ``csd.prompt``,
``csd.transcript``).

The package, by what each module owns:

* ``options``: the command line, ``--help``, the ``CSD_SIM_*`` tuning and the release imitated;
* ``keys``: terminal input decoded into keys, and the input line as 2.1.330 edits it;
* ``directives``: the directives a prompt is steered by;
* ``files``: where Claude Code's files are, the workspace trust in ``~/.claude.json``, settings files;
* ``transcripts``: the transcript written in Claude Code's format and timing;
* ``session``: the session's id, transcript, cost and the common hook-payload fields;
* ``hooks``: the hook table, running hooks and the statusLine command;
* ``screen``: the terminal, the screen and the start-up dialogs;
* ``tools``: the model's requests and tool calls; ``agents``: background agents;
* ``turns``: what one turn does; ``turnqueue``: one turn at a time, interrupts, idle_prompt;
* ``keyboard``: what keys do on the main screen; ``worker``: the parts wired together, signals, lifecycle;
* ``runtime``: the task group every task belongs to; ``main``: the program.
"""
