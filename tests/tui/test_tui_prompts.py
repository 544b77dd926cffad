"""The review screen with a YOLOE target: the prompt version the next training embeds, its data-driven suggestions,
and the key that accepts one into that version (the real review step writes the screen's info)."""

from __future__ import annotations

from al.app.api import review_block
from al.app.api import run_loop as run
from al.core import store
from al.frontends.tui.app import LoopApp
from al.frontends.tui.review import ReviewScreen
from tests.tui.test_tui import SIZE, pilot, review_run, start_event, wait_for

SUGGESTIONS = [
    {"finding": "60% of false negatives are small objects", "suggestion": "Raise imgsz", "priority": "high",
     "evidence": {"fn_small": 3}, "prompt_edit": {"zero": "zero, small, only a few pixels across"}},
    {"finding": "class 'one' has 5 false positives (precision 20%)", "suggestion": "Add hard negatives",
     "priority": "medium", "evidence": {"class": "one"},
     "prompt_edit": {"one": "the digit one, not background clutter or look-alike shapes"}},
]


def _prompted(tmp_path):
    ctx = review_run(tmp_path, "none")
    ctx.env.cfg.model.target = "yoloe-26n.yaml"
    store.write_json(ctx.env.paths.prompts(0), {"iteration": 0, "texts": {"one": "the digit one"},
                                                "suggestions": SUGGESTIONS})
    return ctx


@pilot
async def test_accept_key_puts_the_highlighted_suggestions_edit_into_the_next_version(tmp_path):
    ctx = _prompted(tmp_path)
    f = ctx.env.paths.prompts(0)
    app = LoopApp(ctx, start_event(ctx), runner=run)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen), what="the review screen")
        screen = app.screen
        table = screen.query_one("#prompt-suggestions")
        assert table.row_count == 2
        assert "prompts_iteration_00.json (read by the next training)" in str(screen.query_one("#prompt-texts")
                                                                              .render())
        table.move_cursor(row=1)
        await pilot.press("a")
        await wait_for(pilot, lambda: store.read_json(f)["texts"].get("one") != "the digit one",
                       what="the accepted edit in the prompt file")
        raw = store.read_json(f)
        assert raw["texts"] == {"one": "the digit one, not background clutter or look-alike shapes"}
        assert raw["suggestions"][1]["accepted"] is True and not raw["suggestions"][0].get("accepted")
        assert "not background clutter" in str(screen.query_one("#prompt-texts").render())
        assert "[accepted]" in str(screen.query_one("#review-block").render())
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_value is not None, what="exit")


@pilot
async def test_without_a_yoloe_target_there_is_no_prompt_panel_and_no_accept_key(tmp_path):
    ctx = review_run(tmp_path, "none")
    store.write_json(ctx.env.paths.prompts(0), {"iteration": 0, "texts": {}, "suggestions": SUGGESTIONS})
    app = LoopApp(ctx, start_event(ctx), runner=run)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen), what="the review screen")
        assert not app.screen.query("#prompt-suggestions")
        await pilot.press("a")
        assert store.read_json(ctx.env.paths.prompts(0))["texts"] == {}
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_value is not None, what="exit")


def test_headless_review_block_lists_the_prompts_and_the_proposed_edits(tmp_path):
    from al.steps.review import review_info

    ctx = _prompted(tmp_path)
    info = review_info(ctx, [])
    text = review_block(info)
    assert f"PROMPTS (YOLOE target): {ctx.env.paths.prompts(0)} is what the next training embeds" in text
    assert "  one: 'the digit one'" in text
    assert "suggestion 1 [high]: 60% of false negatives are small objects. Proposed: zero -> " \
           "'zero, small, only a few pixels across'" in text
