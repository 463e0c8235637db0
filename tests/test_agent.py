"""[agent]: the execute_sql environment (same sandbox and refusals as the rewards), capped tool results, the turn
budget, the eval loop on a scripted policy, and a short GRPO run through TRL's environment_factory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nl2sql_align.agent import (
    SQLEnvironment,
    ToolSettings,
    TurnPenalty,
    answer_text,
    call_tool,
    parse_turn,
    render_result,
    run_episodes,
)
from nl2sql_align.data import load_examples
from nl2sql_align.recipe import load_recipe
from nl2sql_align.rewards import RewardEngine
from nl2sql_align.sql import ExecResult

END = ("<|im_end|>", "<|endoftext|>")


def _call(query: str, name: str = "execute_sql") -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": {"query": query}}) + "\n</tool_call><|im_end|>"


def _answer(sql: str) -> str:
    return f"```sql\n{sql}\n```<|im_end|>"


@pytest.fixture(scope="module")
def shop_examples():
    exs = [ex for ex in load_examples("demo:train") if ex.db_id == "shop"]
    return exs[:2]


def test_parse_turn_reads_calls_and_turns_malformed_ones_into_error_observations(spider_db):
    msg = parse_turn("let me look " + _call("SELECT 1") + "<|endoftext|>junk", END)
    assert msg["content"] == "let me look"
    assert msg["tool_calls"] == [
        {"type": "function", "function": {"name": "execute_sql", "arguments": {"query": "SELECT 1"}}}
    ]
    assert "tool_calls" not in parse_turn(_answer("SELECT 1"), END)
    with RewardEngine(workers=1) as engine:
        env = SQLEnvironment(engine.executor)
        env.reset(db_path=str(spider_db), db_engine="sqlite")
        for text in ('<tool_call>{"name": "execute_sql", "arguments": {"query": "SELECT 1"}', "<tool_call>[1, 2]"):
            (call,) = parse_turn(text, END)["tool_calls"]
            name, observation = call_tool(env, call)
            assert name == "execute_sql" and observation.startswith("error: malformed tool call:"), observation
        # An unknown tool or unknown arguments: TRL's own error observation, no exception.
        assert "Tool drop_db not found" in call_tool(env, parse_turn(_call("x", "drop_db"), END)["tool_calls"][0])[1]
        bad_args = {"type": "function", "function": {"name": "execute_sql", "arguments": {"sql": "SELECT 1"}}}
        assert "error" in call_tool(env, bad_args)[1]
        assert call_tool(env, parse_turn(_call("SELECT 41 + 1"), END)["tool_calls"][0])[1].endswith("\n42")


@pytest.mark.parametrize(
    "body",
    ["[" * 5000, '{"name": "execute_sql", "arguments": {"query": ' + "1" * 5000 + "}}", "\x00\ud800", "{" * 3000],
    ids=["deep-nesting", "huge-number", "nul-surrogate", "deep-objects"],
)
def test_degenerate_tool_calls_become_error_observations_never_exceptions(body):
    # What a collapsing RL policy emits: json.loads raises RecursionError / ValueError on these, not JSONDecodeError.
    msg = parse_turn(f"<tool_call>{body}</tool_call>")
    (call,) = msg["tool_calls"]
    assert call["function"]["arguments"]["query"].reason  # a malformed call the tool answers with an error


@pytest.mark.parametrize(
    "sql",
    [
        "DROP TABLE singer",
        "SELECT 1; DELETE FROM singer",
        "ATTACH DATABASE '/tmp/x.db' AS x",
        "SELECT * FROM read_csv('/etc/passwd')",
        "PRAGMA writable_schema = 1",
    ],
)
def test_tool_refuses_hostile_sql_exactly_as_the_reward_path(spider_db, sql):
    with RewardEngine(workers=1) as engine:
        (v,) = engine.judge([f"```sql\n{sql}\n```"], ["SELECT COUNT(*) FROM singer"], [str(spider_db)], ["sqlite"])
        assert not v.executed and v.error.startswith("refused:"), v.error
        env = SQLEnvironment(engine.executor)
        env.reset(db_path=str(spider_db), db_engine="sqlite")
        assert env.execute_sql(sql) == f"error: {v.error}"
        assert env.calls == [(sql, f"error: {v.error}")]
        env.reset(db_path=str(spider_db), db_engine="sqlite")
        assert env.calls == []  # reset clears the rollout's state


def test_tool_results_are_capped(spider_db):
    with RewardEngine(workers=1) as engine:
        env = SQLEnvironment(engine.executor, ToolSettings(max_rows=3, max_chars=200))
        env.reset(db_path=str(spider_db), db_engine="sqlite")
        many = env.execute_sql(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50) SELECT i FROM n"
        )
        assert many.splitlines()[0] == "50 rows; columns: i"
        assert many.splitlines()[1:] == ["1", "2", "3", "... 47 more rows"]
        wide = env.execute_sql("SELECT *, * FROM singer")
        assert len(wide) == 200 and wide.endswith("... [cut]")
    # The executor's own row cap shows as "N+".
    capped = ExecResult(rows=[(i,) for i in range(5)], columns=["i"], error=None, truncated=True)
    assert render_result(capped, ToolSettings(max_rows=2)).splitlines() == [
        "5+ rows; columns: i",
        "0",
        "1",
        "... 3+ more rows",
    ]


class ScriptedGenerator:
    """A stand-in policy: the i-th turn of every conversation is script[i] (the turn number is read from how
    many tool results the conversation already holds)."""

    backend = "scripted"

    def __init__(self, tokenizer, script: list[str]):
        self.tokenizer, self.script, self.seen = tokenizer, script, []

    def continue_texts(self, texts, budgets, batch_size=16):
        self.seen.extend(texts)
        return [self.script[min(t.count("<tool_response>"), len(self.script) - 1)] for t in texts]

    def close(self):
        pass


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from nl2sql_align.generation import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


def test_turn_budget_scores_the_last_answer_or_no_answer(tokenizer, shop_examples):
    recipe = load_recipe(None, ["agent.max_turns=2", "eval.agent=true", "eval.max_new_tokens=1024"])
    from nl2sql_align.sql import SQLExecutor

    with SQLExecutor(workers=1) as ex:
        # Never stops calling tools: 2 rounds run, the third turn's call does not; its text is the answer.
        gen = ScriptedGenerator(tokenizer, ["```sql\nSELECT 1\n```\n" + _call("SELECT COUNT(*) FROM customers")])
        (ep,) = run_episodes(gen, shop_examples[:1], recipe, ex)
        assert [m["role"] for m in ep.messages] == ["assistant", "tool", "assistant", "tool", "assistant"]
        assert len(gen.seen) == 3 and ep.env.calls and len(ep.env.calls) == 2
        assert answer_text(ep.messages) == "```sql\nSELECT 1\n```"
        # Without a code block after the last tool result there is no answer (earlier blocks do not count).
        gen = ScriptedGenerator(tokenizer, [_answer("SELECT 2") + "", _call("SELECT 1"), _call("SELECT 1")])
        gen.script[0] = "```sql\nSELECT 2\n```" + _call("SELECT 1")
        (ep,) = run_episodes(gen, shop_examples[:1], recipe, ex)
        assert answer_text(ep.messages) == ""
    # The same rule on a completion as TRL hands it to the rewards, and the turn penalty counts calls that ran.
    completion = [
        {"role": "assistant", "content": "```sql\nSELECT 9\n```", "tool_calls": [{}]},
        {"role": "tool", "name": "execute_sql", "content": "1 row"},
        {"role": "assistant", "content": "no query here"},
    ]
    assert answer_text(completion) == ""
    assert TurnPenalty(0.1)(completions=[completion, completion[:1]]) == [pytest.approx(-0.1), 0.0]


def test_agent_eval_on_a_scripted_policy(tokenizer, shop_examples, tmp_path: Path):
    from nl2sql_align.evaluate import evaluate

    ex = shop_examples[0]
    script = [
        "<tool_call>{not json</tool_call><|im_end|>",  # malformed: an error observation, then the next turn
        "I will check. " + _call("SELECT COUNT(*) FROM customers"),
        _answer(ex.sql),
    ]
    recipe = load_recipe(None, ["eval.agent=true", "agent.max_turns=3", "eval.max_new_tokens=1024"])
    gen = ScriptedGenerator(tokenizer, script)
    summary, preds = evaluate([ex], recipe, generator=gen, report_dir=tmp_path / "r", print_table=False)
    # Two calls answered (the malformed one with an error observation), then the answer: 3 assistant turns.
    assert summary["ex"] == 100.0
    assert summary["agent"] == {"max_turns": 3, "mean_tool_calls": 2.0, "mean_assistant_turns": 3.0}
    assert preds == [ex.sql]
    row = json.loads((tmp_path / "r" / "per_example.jsonl").read_text().splitlines()[0])
    assert (row["tool_calls"], row["assistant_turns"]) == (2, 3)
    # A question whose gold fails is left out with skip_bad_gold: the facts stay with their own questions.
    from dataclasses import replace

    broken = replace(shop_examples[1], sql="SELECT nope FROM customers")
    gen = ScriptedGenerator(tokenizer, script)
    summary, _ = evaluate([broken, ex], recipe, generator=gen, print_table=False, skip_bad_gold=True,
                          report_dir=tmp_path / "skip")  # fmt: skip
    rows = [json.loads(x) for x in (tmp_path / "skip" / "per_example.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == [1] and rows[0]["correct"] and rows[0]["tool_calls"] == 2
    assert summary["n"] == 1 and summary["agent"]["mean_tool_calls"] == 2.0
    assert "error: malformed tool call" in row["output"] and "[tool call] execute_sql" in row["output"]
    assert "<tool_response>" in gen.seen[-1] and "# Tools" in gen.seen[0]  # results fed back through the template
    # The same transcript with a wrong final answer is scored wrong; with a budget of 1 round, no answer at all.
    wrong = ScriptedGenerator(tokenizer, [*script[1:2], _answer("SELECT COUNT(*) FROM products")])
    assert evaluate([ex], recipe, generator=wrong, print_table=False)[0]["ex"] == 0.0
    short = load_recipe(None, ["eval.agent=true", "agent.max_turns=1", "eval.max_new_tokens=1024"])
    summary, preds = evaluate([ex], short, generator=ScriptedGenerator(tokenizer, script), print_table=False)
    assert preds == [""] and summary["ex"] == 0.0


def test_grpo_agent_run_through_trl_environment_factory(tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    """2 prompts x 2 completions, 2 steps. A random micro model never writes a tool call by itself, so the first
    turn of one completion per prompt is scripted (a call, then the model continues after the real tool result);
    everything after that is TRL's loop: parsing, SQLEnvironment, the tool suffix, regeneration, rewards, logs."""
    import trl

    from nl2sql_align.stages import grpo
    from tests.conftest import stage_recipe

    original = trl.GRPOTrainer._generate_single_turn

    def scripted_first_turn(self, prompt_ids, images, multimodal_fields, num_generations, **kw):
        ids, logprobs = original(self, prompt_ids, images, multimodal_fields, num_generations, **kw)
        if num_generations > 1:  # the first turn (post-tool turns generate one per rollout)
            call = self.processing_class(_call("SELECT COUNT(*) FROM customers"), add_special_tokens=False)
            ids = [call["input_ids"] if i % 2 == 0 else x for i, x in enumerate(ids)]
        return ids, logprobs

    monkeypatch.setattr(trl.GRPOTrainer, "_generate_single_turn", scripted_first_turn)
    out = tmp_path / "grpo-agent"
    recipe = stage_recipe(
        "grpo",
        tiny_model_dir,
        out,
        "data.train_limit=2",
        'data.eval=""',
        "train.max_steps=2",
        "train.num_generations=2",
        "train.per_device_train_batch_size=4",
        "train.max_completion_length=200",
        "train.logging_steps=1",
        "reward.log_completions=4",
        "agent.max_turns=2",
        "agent.turn_penalty=0.05",
    )
    assert grpo.run(recipe) == out
    steps = [x for x in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in x]
    assert len(steps) == 2
    assert all(s["tools/call_frequency"] > 0 for s in steps)
    assert all(s["rewards/turn_penalty/mean"] < 0 for s in steps)
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    multi = [r for r in rows if "turns" in r]
    assert multi, rows
    roles = [t["role"] for t in multi[0]["turns"]]
    assert roles[:3] == ["assistant", "tool", "assistant"]
    assert multi[0]["turns"][0]["tool_calls"][0]["arguments"] == {"query": "SELECT COUNT(*) FROM customers"}
    assert multi[0]["turns"][1]["content"].startswith("1 row; columns:")
    assert "turn_penalty" in multi[0]["rewards"]
    # The saved tokenizer renders tools (the template the agent trained with).
    assert "<tool_call>" in json.loads((out / "tokenizer_config.json").read_text()).get("chat_template", "") or (
        "<tool_call>" in (out / "chat_template.jinja").read_text()
    )


def test_eval_agent_flag_runs_the_loop_with_the_hf_generator(tiny_model_dir: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from nl2sql_align.cli import app

    args = ["eval", "--model", str(tiny_model_dir), "--data", "demo:dev", "--limit", "2", "--agent", "--json"]
    res = CliRunner().invoke(app, [*args, "--report", str(tmp_path / "r"), "--set", "eval.max_new_tokens=24"])
    assert res.exit_code == 0, res.output
    # A random model writes no tool call: one turn each, and that turn is the (empty) answer.
    assert json.loads(res.stdout)["agent"] == {"max_turns": 3, "mean_tool_calls": 0.0, "mean_assistant_turns": 1.0}
    rows = [json.loads(x) for x in (tmp_path / "r" / "per_example.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["pred"] == "" for r in rows)  # a random model writes no code block: no answer
    no_model = CliRunner().invoke(app, ["eval", "--data", "demo:dev", "--agent"])
    assert "--agent needs --model" in str(no_model.exception)


def test_agent_settings_are_checked_before_training():
    from nl2sql_align.stages.rl import check_group_train

    def check(*sets, algorithm="GRPO"):
        return check_group_train(
            {"num_generations": 2, "per_device_train_batch_size": 2}, load_recipe(None, list(sets)), 1, algorithm
        )

    assert check("agent.max_turns=2") is None
    assert "grpo only" in check("agent.max_turns=2", algorithm="RLOO")
    assert "agent.max_turns = 0" in check("agent.max_turns=0")
    assert "[agent]" in check("agent.max_turns=2", "train.max_tool_calling_iterations=4")
    assert check("train.max_tool_calling_iterations=4") is None  # single-turn: TRL's key is left alone


def test_eval_turn_ends_at_chatml_end_of_turn_like_training(tiny_model_dir, shop_examples):
    """A generated turn that closes with <|im_end|> and runs on (a model whose EOS is another token, or no stop
    in a batch) ends there in eval, as TRL's parser (install_parser) ends it in training: what follows is not
    part of the turn, and a tool call after it never runs."""
    from nl2sql_align.agent import turn_ends
    from nl2sql_align.generation import load_tokenizer
    from nl2sql_align.sql import SQLExecutor

    tokenizer = load_tokenizer(str(tiny_model_dir))
    tokenizer.eos_token = "<|endoftext|>"  # a ChatML model whose EOS is not its end-of-turn marker
    ends = turn_ends(tokenizer)
    assert "<|im_end|>" in ends and tokenizer.eos_token in ends
    recipe = load_recipe(None, ["agent.max_turns=2", "eval.agent=true", "eval.max_new_tokens=1024"])
    tail = "<|im_end|>\nassistant garbage " + _call("SELECT COUNT(*) FROM customers")
    with SQLExecutor(workers=1) as ex:
        gen = ScriptedGenerator(tokenizer, [_answer("SELECT 7") + tail])
        (ep,) = run_episodes(gen, shop_examples[:1], recipe, ex)
    assert [m["role"] for m in ep.messages] == ["assistant"] and not ep.env.calls
    assert "garbage" not in ep.text and answer_text(ep.messages) == "```sql\nSELECT 7\n```"


def test_eval_closes_a_tool_calling_turn_as_the_template_does(tiny_model_dir, shop_examples):
    """With an EOS that is not the template's end-of-turn marker, the next turn's context still reads as the chat
    template renders it: the call, <|im_end|>, a newline, then the tool result (not the EOS glued to it)."""
    from nl2sql_align.agent import turn_close
    from nl2sql_align.generation import load_tokenizer
    from nl2sql_align.sql import SQLExecutor

    tokenizer = load_tokenizer(str(tiny_model_dir))
    tokenizer.eos_token = "<|endoftext|>"
    recipe = load_recipe(None, ["agent.max_turns=2", "eval.agent=true", "eval.max_new_tokens=1024"])
    with SQLExecutor(workers=1) as ex:
        gen = ScriptedGenerator(tokenizer, [_call("SELECT COUNT(*) FROM customers"), _answer("SELECT 7")])
        (ep,) = run_episodes(gen, shop_examples[:1], recipe, ex)
    assert turn_close(tokenizer) == "<|im_end|>"
    assert [m["role"] for m in ep.messages] == ["assistant", "tool", "assistant"]
    second = gen.seen[1]  # the context the second turn was generated from
    assert "</tool_call><|im_end|>\n<|im_start|>" in second and "<|endoftext|><|im_start|>" not in second
    assert second.endswith("<|im_start|>assistant\n") and "<tool_response>" in second


# --- the warm start: sft with [agent] trains tool-calling trajectories (nl2sql_align/agent_data.py) ------------


@pytest.mark.parametrize(
    "gold, expected",
    [
        (
            "SELECT name FROM singer WHERE country = 'France'",
            "SELECT DISTINCT country FROM singer WHERE LOWER(CAST(country AS TEXT)) = LOWER('France') LIMIT 10",
        ),
        # the alias resolves to its table, the string comparison is found past a numeric one
        (
            "SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.id = T2.sid WHERE T1.age > 3 AND T2.theme = 'Free'",
            "SELECT DISTINCT theme FROM concert WHERE LOWER(CAST(theme AS TEXT)) = LOWER('Free') LIMIT 10",
        ),
        (
            'SELECT a FROM "My Table" WHERE "Full Name" LIKE \'Bob%\'',  # a pattern stays a pattern; quoting kept
            'SELECT DISTINCT "Full Name" FROM "My Table" WHERE LOWER(CAST("Full Name" AS TEXT)) LIKE LOWER(\'Bob%\') LIMIT 10',
        ),
        ("SELECT count(*) FROM singer WHERE age > 20", "SELECT * FROM singer LIMIT 3"),  # nothing to look up
        ("SELECT name FROM a JOIN b ON a.x = b.y WHERE name = 'x'", "SELECT * FROM a LIMIT 3"),  # whose column?
        ("SELECT FROM (", None),
        # Spider's double-quoted string is a string, as SQLite reads it
        (
            'SELECT name FROM airports WHERE city = "Aberdeen"',
            "SELECT DISTINCT city FROM airports WHERE LOWER(CAST(city AS TEXT)) = LOWER('Aberdeen') LIMIT 10",
        ),
        # a CTE's name is not a table to peek at
        ("WITH c AS (SELECT 1 AS x) SELECT x FROM c, singer", "SELECT * FROM singer LIMIT 3"),
    ],
)
def test_exploratory_query_is_derived_from_the_gold(gold, expected):
    from nl2sql_align.agent_data import exploratory_query

    assert exploratory_query(gold, "sqlite", 10) == expected


def test_exploratory_query_is_written_for_the_database_it_runs_on():
    # Spider gold is SQLite; a PostgreSQL copy of the database gets PostgreSQL's quoting.
    q = exploratory_query_of("SELECT `Name` FROM `Singer` WHERE `Country` = 'France'", "sqlite", "postgres")
    assert (
        q
        == """SELECT DISTINCT "Country" FROM "Singer" WHERE LOWER(CAST("Country" AS TEXT)) = LOWER('France') LIMIT 10"""
    )


def exploratory_query_of(sql: str, dialect: str, db_dialect: str) -> str | None:
    from nl2sql_align.agent_data import exploratory_query

    return exploratory_query(sql, dialect, 10, db_dialect)


def test_sft_refuses_a_bad_agent_table_before_training(tiny_model_dir: Path, tmp_path: Path):
    from nl2sql_align.errors import RecipeError
    from nl2sql_align.stages import sft
    from tests.conftest import stage_recipe

    recipe = stage_recipe("sft", tiny_model_dir, tmp_path / "x", "agent.max_result_rows=0", "data.train_limit=4")
    with pytest.raises(RecipeError, match="agent.max_result_rows = 0"):
        sft.run(recipe)
    assert not (tmp_path / "x").exists()


def test_agent_sft_rows_are_the_agents_own_turns(shop_examples, tiny_model_dir: Path):
    """The prompt is byte for byte the one the agent is prompted with in GRPO and eval; the tool result is the real
    one, rendered as the tool renders it; the answer is the gold."""
    from transformers import AutoTokenizer

    from nl2sql_align.agent import agent_chat_template, agent_prompt_texts, tool_settings
    from nl2sql_align.agent_data import agent_sft_rows, exploratory_query
    from nl2sql_align.data import format_answer
    from nl2sql_align.sql import SQLExecutor
    from tests.conftest import REPO

    recipe = load_recipe(REPO / "recipes" / "tiny-sft.toml", ["agent.max_result_rows=5"])
    examples = [ex for ex in load_examples("demo:train") if ex.db_id == "shop" and "'" in ex.sql][:3]
    examples += shop_examples[:1]
    rows = agent_sft_rows(examples, recipe)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    with SQLExecutor(workers=1) as ex:
        for row, example in zip(rows, examples, strict=True):
            assistant, tool, answer = row["completion"]
            query = exploratory_query(example.sql, example.db.dialect, 5)
            assert assistant["tool_calls"][0]["function"] == {"name": "execute_sql", "arguments": {"query": query}}
            assert tool["content"] == render_result(ex.execute(example.db, query), tool_settings(recipe.agent))
            assert answer == {"role": "assistant", "content": format_answer(example.sql)}
    for row in rows[:3]:  # each of these golds compares a column with a string
        query = row["completion"][0]["tool_calls"][0]["function"]["arguments"]["query"]
        assert query.startswith("SELECT DISTINCT") and "LOWER(CAST(" in query
        assert not row["completion"][1]["content"].startswith("0 rows")  # the gold's own literal is found
    agent_chat_template(tok)
    prompts = agent_prompt_texts(tok, examples, recipe.data.schema, recipe.data.system_prompt)
    for row, prompt in zip(rows, prompts, strict=True):
        rendered = tok.apply_chat_template(row["prompt"], tools=json.loads(row["tools"]), tokenize=False,
                                           add_generation_prompt=True)  # fmt: skip
        assert rendered == prompt


def test_sft_with_agent_trains_the_trajectories_and_saves_a_tool_template(tiny_model_dir: Path, tmp_path: Path):
    from nl2sql_align.stages import sft
    from nl2sql_align.stages.sft import token_lengths
    from tests.conftest import stage_recipe

    out = tmp_path / "agent-sft"
    args = ("data.train_limit=8", 'data.eval=""', "train.max_steps=2", "train.logging_steps=1", "train.max_length=1024")
    recipe = stage_recipe("sft", tiny_model_dir, out, *args, "agent.max_turns=2")
    plain = stage_recipe("sft", tiny_model_dir, tmp_path / "plain", *args)
    from transformers import AutoTokenizer

    examples = load_examples("demo:train")[:8]
    agent_len = token_lengths(recipe, examples, AutoTokenizer.from_pretrained(tiny_model_dir))
    plain_len = token_lengths(plain, examples, AutoTokenizer.from_pretrained(tiny_model_dir))
    assert all(a > p for a, p in zip(agent_len, plain_len, strict=True))  # the preflight measures the trajectories
    assert sft.run(recipe) == out
    steps = [x for x in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in x]
    assert len(steps) == 2
    assert "<tool_call>" in (out / "chat_template.jinja").read_text()  # GRPO and eval --agent render the same


def test_compact_tool_template_renders_what_the_agent_reads_in_far_fewer_tokens(tiny_model_dir: Path, shop_examples):
    """recipes/templates/chatml-tools-compact.jinja (the tiny agent's): without tools it is ChatML; with the tool
    it keeps Qwen2.5's call and result format (TRL accepts it, parse_turn reads its calls back, a tool result
    continues a conversation as a prefix) and the prompt is hundreds of tokens shorter."""
    from transformers import AutoTokenizer
    from trl.chat_template_utils import supports_tool_calling

    from nl2sql_align.agent import agent_prompt_texts, prepare_tokenizer, tool_suffix
    from nl2sql_align.stages.setup import read_chat_template
    from tests.conftest import REPO

    recipe = load_recipe(REPO / "recipes" / "tiny-agent-sft.toml")
    qwen, compact = AutoTokenizer.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)
    plain = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    chatml = compact.apply_chat_template(plain, tokenize=False, add_generation_prompt=True)
    compact.chat_template = read_chat_template(str(REPO / recipe.model.chat_template))
    assert compact.apply_chat_template(plain, tokenize=False, add_generation_prompt=True) == chatml
    assert supports_tool_calling(compact)
    prepare_tokenizer(qwen)
    prepare_tokenizer(compact)  # kept: it already renders <tool_call>
    long = agent_prompt_texts(qwen, shop_examples[:2], recipe.data.schema, recipe.data.system_prompt)
    short = agent_prompt_texts(compact, shop_examples[:2], recipe.data.schema, recipe.data.system_prompt)
    for a, b, example in zip(long, short, shop_examples[:2], strict=True):
        assert "Tool execute_sql(query): " in b and f"Question: {example.question}" in b
        assert len(compact(b)["input_ids"]) + 300 < len(qwen(a)["input_ids"])
    call = '<tool_call>\n{"name": "execute_sql", "arguments": {"query": "SELECT 1"}}\n</tool_call>'
    turn = parse_turn(call + "<|im_end|>", ("<|im_end|>",))
    assert turn["tool_calls"][0]["function"] == {"name": "execute_sql", "arguments": {"query": "SELECT 1"}}
    convo = [*plain, {"role": "assistant", "content": "", "tool_calls": turn["tool_calls"]}]
    rendered = compact.apply_chat_template(convo, tokenize=False)
    assert call in rendered
    result = [{"role": "tool", "name": "execute_sql", "content": "1 row"}]
    suffix = tool_suffix(compact, result)
    assert suffix == tool_suffix(qwen, result)  # results come back exactly as with Qwen2.5's template
    assert "<tool_response>\n1 row\n</tool_response>" in suffix and suffix.endswith("<|im_start|>assistant\n")


def test_a_missing_chat_template_file_is_refused_not_used_as_the_template(tiny_model_dir: Path):
    from nl2sql_align.errors import RecipeError
    from nl2sql_align.validate import validate_recipe
    from tests.conftest import REPO

    model = f'model.name_or_path="{tiny_model_dir}"'
    recipe = REPO / "recipes" / "tiny-agent-sft.toml"
    with pytest.raises(RecipeError, match="model.chat_template: recipes/templates/nope.jinja does not exist"):
        validate_recipe(recipe, overrides=[model, 'model.chat_template="recipes/templates/nope.jinja"'])
    validate_recipe(recipe, overrides=[model])  # the shipped template exists (paths are relative to the repo root)
