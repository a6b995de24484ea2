"""The claude agent: the Anthropic Messages API with tools, through the official SDK.

One proposal = one short conversation. It opens with a summary of the campaign (the ledger's
compact table and the last result with its error tail), never the transcript of earlier
proposals, so the context stays bounded however long the campaign runs. The model inspects
and edits files with tools confined to the Workspace's scope (a refusal comes back to it as
an is_error tool result, so it can correct itself) and ends the proposal by calling
run_experiment(description); the loop then commits and runs it.

  - Prompt caching: the tools and the system prompt (program.md + the scope) are the stable
    prefix, marked cache_control {"type": "ephemeral"}; the latest message carries a
    breakpoint too, so each turn of a proposal re-reads the previous turns from the cache.
  - Cost: every response's usage (input, output, cache write, cache read tokens) is priced
    from harness.agents.prices (config overrides); `max_cost_usd` is a hard cap across the
    campaign, checked before every request: CostCapReached ends the campaign cleanly. On a
    resume, set `agent.spent_usd` to what the ledger says was already spent.
  - Retries: the SDK's own (max_retries, exponential backoff, honouring retry-after) on 408,
    409, 429, 529 and other 5xx. An error that survives them stops the campaign (resumable).
  - The API key is read from ANTHROPIC_API_KEY only, handed to the SDK and never stored on
    this object or logged.

cfg keys (`agent.*`; their defaults are ClaudeAgentConf's, harness/agent_config.py): model,
max_turns, max_tokens, max_cost_usd (absent = no cap), prices, max_retries, timeout_s,
base_url (None: the SDK's default or ANTHROPIC_BASE_URL), temperature (None); and, for
callers that build the agent directly, max_file_chars (100000).
"""
from __future__ import annotations

import copy
import logging
import os

from harness.agent_config import ClaudeAgentConf
from harness.agents.base import Agent, Context, CostCapReached, Proposal, StopCampaign
from harness.agents.prices import cost_usd, price_for
from harness.workspace import EditError, ScopeError

log = logging.getLogger(__name__)
DEFAULT_MODEL = ClaudeAgentConf.model  # one source: the schema's default (`agent.model`)
EPHEMERAL = {"type": "ephemeral"}
NUDGE = ("Use the tools to make your change, then call run_experiment with a one-line "
         "description. Do not answer in prose only.")


def _schema(**props: str) -> dict:
    return {"type": "object", "required": list(props),
            "properties": {k: {"type": "string", "description": d} for k, d in props.items()}}


TOOLS = [
    {"name": "list_files", "description": "List the files you may edit (paths relative to "
     "the work tree).", "input_schema": _schema()},
    {"name": "read_file", "description": "Read a file you may edit, or an immutable "
     "reference file.", "input_schema": _schema(path="relative path")},
    {"name": "replace_in_file", "description": "Replace text in a file you may edit. `old` "
     "must match the file exactly (whitespace included) and occur exactly once.",
     "input_schema": _schema(path="relative path", old="exact text to replace",
                             new="replacement text")},
    {"name": "write_file", "description": "Create or overwrite a file you may edit with the "
     "full content given.", "input_schema": _schema(path="relative path",
                                                    content="the whole new file")},
    {"name": "read_ledger", "description": "The campaign's experiments so far: seq, status "
     "(keep/discard/crash), val_bpb (lower is better), description.",
     "input_schema": _schema()},
    {"name": "run_experiment", "description": "Finish this proposal: the harness commits your "
     "edits and runs ONE experiment under the fixed budget, then keeps the change if val_bpb "
     "improved or reverts it. Call it once your edit is complete.",
     "input_schema": _schema(description="one line: what you changed and why")},
]


def tool_definitions() -> list[dict]:
    """TOOLS with a cache breakpoint on the last one: the whole tool list is cached."""
    tools = copy.deepcopy(TOOLS)
    tools[-1]["cache_control"] = dict(EPHEMERAL)
    return tools


def _block(b) -> dict:
    """A response content block as a request content block (what the API accepts back)."""
    if b.type == "text":
        return {"type": "text", "text": b.text}
    if b.type == "tool_use":
        return {"type": "tool_use", "id": b.id, "name": b.name, "input": b.input}
    return b.model_dump(exclude_none=True)  # thinking blocks etc. go back verbatim


def _mark_last(messages: list[dict]) -> None:
    """Move the conversation's cache breakpoint to the newest message (4 breakpoints max)."""
    for m in messages:
        if isinstance(m["content"], list):
            for b in m["content"]:
                b.pop("cache_control", None)
    last = messages[-1]
    if isinstance(last["content"], str):
        last["content"] = [{"type": "text", "text": last["content"]}]
    last["content"][-1]["cache_control"] = dict(EPHEMERAL)


class ClaudeAgent(Agent):
    """Proposes experiments by letting Claude edit the workspace through tools."""
    name = "claude"

    def __init__(self, cfg: dict, seed: int = 0, http_client=None):
        self.model = str(cfg.get("model") or DEFAULT_MODEL)
        self.max_turns = int(cfg.get("max_turns", ClaudeAgentConf.max_turns))
        self.max_tokens = int(cfg.get("max_tokens", ClaudeAgentConf.max_tokens))
        cap = cfg.get("max_cost_usd")
        self.max_cost_usd = float(cap) if cap is not None else None
        self.temperature = cfg.get("temperature")
        self.max_file_chars = int(cfg.get("max_file_chars", 100_000))
        try:
            self.price = price_for(self.model, cfg.get("prices"))
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        self.spent_usd = 0.0  # across the campaign; the loop restores it on resume
        key = os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise StopCampaign("agent=claude needs ANTHROPIC_API_KEY in the environment (or agent=random: "
                               "no API needed)", code=2)
        # The SDK takes about a second to import: only a claude agent loads it, so the
        # registry, which names every agent, costs the other agents nothing.
        import anthropic

        # api_key passed explicitly: the SDK then consults no other credential source.
        self._client = anthropic.Anthropic(
            api_key=key, base_url=cfg.get("base_url"), http_client=http_client,
            max_retries=int(cfg.get("max_retries", ClaudeAgentConf.max_retries)),
            timeout=float(cfg.get("timeout_s", ClaudeAgentConf.timeout_s)))

    def __repr__(self) -> str:
        return f"<ClaudeAgent model={self.model} spent=${self.spent_usd:.4f}>"

    # ------------------------------------------------------------------ prompts
    @staticmethod
    def system_prompt(ctx: Context) -> str:
        """Stable across proposals (program.md and the scope only), hence cacheable."""
        return (f"{ctx.program.rstrip()}\n\n## This campaign\n{ctx.workspace.describe()}\n"
                "Each proposal: look at what you need, make ONE change with the tools, then "
                "call run_experiment with a one-line description. Edits outside your scope are "
                "refused. The harness measures val_bpb itself and keeps or reverts the change.")

    @staticmethod
    def brief(ctx: Context, tail_chars: int = 3000) -> str:
        """The proposal's first message: the campaign so far, summarized."""
        parts = ["Experiments so far (most recent last):", *(ctx.ledger_lines or ["(none yet)"])]
        last = ctx.last
        if last:
            bpb = last.get("val_bpb")
            parts += ["", f"Last experiment: {last.get('description') or '(none)'} -> status "
                      f"{last.get('status')}, val_bpb {bpb if bpb is not None else '-'}."]
            tail = last.get("error_tail") or last.get("error")
            if tail:
                parts += ["Its error output ended with:", "```", str(tail)[-tail_chars:], "```"]
        parts += ["", "Propose the next experiment."]
        return "\n".join(parts)

    # ------------------------------------------------------------------ accounting
    def _check_cap(self, partial: Proposal) -> None:
        if self.max_cost_usd is not None and self.spent_usd >= self.max_cost_usd:
            raise CostCapReached(
                f"agent spend ${self.spent_usd:.4f} reached agent.max_cost_usd "
                f"${self.max_cost_usd:.4f}", self.spent_usd, self.max_cost_usd, partial)

    def _account(self, usage, p: Proposal) -> None:
        tin, tout = usage.input_tokens or 0, usage.output_tokens or 0
        cw, cr = usage.cache_creation_input_tokens or 0, usage.cache_read_input_tokens or 0
        c = cost_usd(self.price, tin, tout, cw, cr)
        p.tokens_in += tin
        p.tokens_out += tout
        p.cache_write += cw
        p.cache_read += cr
        p.cost_usd += c
        self.spent_usd += c

    # ------------------------------------------------------------------ API and tools
    def _create(self, system: list, messages: list):
        kwargs = dict(model=self.model, max_tokens=self.max_tokens, system=system,
                      tools=tool_definitions(), messages=messages)
        if self.temperature is not None:
            kwargs["temperature"] = float(self.temperature)
        import anthropic  # loaded by __init__ already: only a name here

        try:
            return self._client.messages.create(**kwargs)
        except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as e:
            raise StopCampaign(f"the Anthropic API refused the credentials (HTTP "
                               f"{e.status_code})") from None
        except anthropic.APIStatusError as e:
            raise StopCampaign(f"Anthropic API error HTTP {e.status_code} after retries: "
                               f"{str(e)[:300]}") from None
        except anthropic.APIConnectionError as e:
            raise StopCampaign(f"cannot reach the Anthropic API after retries: {e}") from None

    def _tool(self, name: str, args: dict, ctx: Context, edits: list[str]) -> tuple[str, bool]:
        """(result text, is_error) for one tool call; never raises for the model's mistakes."""
        ws = ctx.workspace
        try:
            if name == "list_files":
                return "\n".join(ws.list_files()) or "(no editable files)", False
            if name == "read_file":
                text = ws.read(args["path"])
                n = self.max_file_chars  # one huge file must not blow the context
                if len(text) > n:
                    text = text[:n] + f"\n[... truncated at {n} characters]"
                return text, False
            if name == "replace_in_file":
                ws.replace(args["path"], args["old"], args["new"])
                edits.append(f"edited {args['path']}")
                return f"ok: replaced 1 occurrence in {args['path']}", False
            if name == "write_file":
                ws.write(args["path"], args["content"])
                edits.append(f"wrote {args['path']}")
                return f"ok: wrote {len(args['content'])} characters to {args['path']}", False
            if name == "read_ledger":
                return "\n".join(ctx.ledger_lines) or "(no experiments yet)", False
            return f"unknown tool {name!r}", True
        except ScopeError as e:
            return f"refused: {e}", True
        except EditError as e:
            return f"error: {e}", True
        except KeyError as e:
            return f"error: missing argument {e.args[0]!r} for {name}", True
        except (OSError, UnicodeError, TypeError) as e:
            return f"error: {e}", True

    # ------------------------------------------------------------------ the proposal
    def propose(self, ctx: Context) -> Proposal:
        p = Proposal("")
        try:
            return self._converse(ctx, p)
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM mid-proposal: the loop records what was billed
            e.partial = p
            raise

    def _converse(self, ctx: Context, p: Proposal) -> Proposal:
        """The proposal's conversation; `p` accumulates its usage as responses arrive."""
        system = [{"type": "text", "text": self.system_prompt(ctx),
                   "cache_control": dict(EPHEMERAL)}]
        messages: list[dict] = [{"role": "user", "content": self.brief(ctx)}]
        edits: list[str] = []
        for turn in range(1, self.max_turns + 1):
            self._check_cap(p)
            _mark_last(messages)
            try:
                resp = self._create(system, messages)
            except StopCampaign as e:  # the turns answered so far were billed: the loop records them
                e.partial = p
                raise
            self._account(resp.usage, p)
            content = [_block(b) for b in resp.content] or [{"type": "text", "text": "..."}]
            messages.append({"role": "assistant", "content": content})
            calls = [b for b in resp.content if b.type == "tool_use"]
            if not calls:
                messages.append({"role": "user", "content": NUDGE})
                continue
            results = []
            for call in calls:
                if call.name == "run_experiment":
                    desc = " ".join(str((call.input or {}).get("description") or "").split())
                    p.description = desc or "; ".join(edits) or "(no description)"
                    self._log(p, turn)
                    return p
                text, is_error = self._tool(call.name, dict(call.input or {}), ctx, edits)
                result = {"type": "tool_result", "tool_use_id": call.id, "content": text}
                if is_error:
                    result["is_error"] = True
                results.append(result)
            messages.append({"role": "user", "content": results})
        # Out of turns: run what was edited (it is a change like any other) or give up.
        self._log(p, self.max_turns)
        if edits:
            p.description = f"(turn limit reached) {'; '.join(edits)}"
            return p
        # Nothing to run, but its turns were billed: a stop that carries them (a None would
        # end the campaign with this proposal's dollars uncounted in the ledger).
        log.warning("claude: no edit after %d turns; nothing more to try", self.max_turns)
        raise StopCampaign(f"the agent made no edit in {self.max_turns} turns (agent.max_turns): nothing more "
                           f"to try", code=0, partial=p)

    def _log(self, p: Proposal, turns: int) -> None:
        log.info("claude: %d turns, tokens in %d out %d cache read %d write %d, $%.4f "
                 "(campaign $%.4f)", turns, p.tokens_in, p.tokens_out, p.cache_read,
                 p.cache_write, p.cost_usd, self.spent_usd)
