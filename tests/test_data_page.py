"""The Data page (pages/0_Data.py) through Streamlit's AppTest: a dataset measured with the tiny
Llama's tokenizer, its charts and chats, a recipe refused when it selects nothing and saved when it
does, the link to train on it, the lab's question, and files it cannot read."""

import json

from conftest import PROJECT_DIR, app_at, charts, follow, heavy_modules_after_rendering, rerun, shown

PAGE = "pages/0_Data.py"
SCORED = "data/sample_scored.jsonl"


def measured(query: dict | None = None):
    return rerun(app_at(PAGE, {"source": SCORED, "model": "tiny-llama", **(query or {})}, timeout=120))


def test_the_page_opens_without_measuring_or_heavy_imports(runs_root):
    app = rerun(app_at(PAGE))
    assert app.title[0].value == "Data" and app.button(key="data_measure")
    assert "Measure reads every row" in app.info[0].value and not app.metric
    assert heavy_modules_after_rendering(PAGE) == []


def test_a_linked_dataset_is_measured_and_drawn(tiny_model, runs_root):
    app = measured()
    figures = {metric.label: metric.value for metric in app.metric}
    assert figures["Rows"] == "600" and figures["Usable"] == "600" and figures["Exact duplicates"] == "4"
    drawn = charts(app)
    assert set(drawn) == {"data_lengths", "data_turns", "data_sources", "data_scores"}
    assert drawn["data_lengths"]["layout"]["shapes"][0]["x0"] == 1024  # the max_seq_length line
    assert sum(drawn["data_turns"]["data"][0]["y"]) == 600
    app.number_input(key="data_max_seq").set_value(256).run()
    assert charts(app)["data_lengths"]["layout"]["shapes"][0]["x0"] == 256
    assert int(next(m.value for m in app.metric if m.label == "Cut by max_seq_length")) > 0
    first = json.loads((PROJECT_DIR / SCORED).read_text().split("\n", 1)[0])["conversations"]
    messages = list(app.get("chat_message"))
    assert len(messages) >= len(first) and shown(messages[0].markdown[0].value) == first[0]["value"]
    app.number_input(key="data_page").set_value(2).run()
    assert any(shown(caption.value).startswith("row 5 ·") for caption in app.caption)
    assert (app.query_params["source"], app.query_params["model"]) == (SCORED, "tiny-llama")


def test_a_recipe_is_refused_when_empty_and_saved_when_not(tiny_model, runs_root):
    app = measured()
    app.number_input(key="recipe_min_score").set_value(9.0).run()
    assert "Nothing to train on" in app.warning[0].value
    save = next(button for button in app.button if button.label == "Save recipe")
    assert save.disabled
    app.number_input(key="recipe_min_score").set_value(4.5).run()
    app.slider(key="recipe_validation").set_value(0.1).run()
    app.text_input(key="recipe_name").input("best").run()
    next(button for button in app.button if button.label == "Save recipe").click().run()
    assert not app.exception and not app.error
    saved = json.loads((runs_root / ".recipes" / "best.json").read_text())
    assert saved["min_score"] == 4.5 and saved["validation_count"] > 0
    steps = app.dataframe[0].value["step"].tolist()
    assert steps[2] == "score in [4.5, inf]" and steps[-1].startswith("held out for validation")
    next(button for button in app.button if button.label == "Save recipe").click().run()
    assert "a recipe named best exists" in shown(app.error[0].value)
    train = follow(app, "Train a run on best")
    assert train.text_input(key="train_field_recipe").value == "best"
    assert train.text_input(key="train_field_dataset").value == SCORED


def test_the_lab_question_saves_two_recipes(tiny_model, runs_root):
    app = measured()
    app.number_input(key="lab_rows").set_value(200).run()
    app.button(key="lab_save").click().run()
    assert not app.exception
    random_rows = json.loads((runs_root / ".recipes" / "lab-random-200.json").read_text())
    top_rows = json.loads((runs_root / ".recipes" / "lab-top-score-200.json").read_text())
    assert random_rows["train_count"] + random_rows["validation_count"] == 200
    assert random_rows["validation_count"] == top_rows["validation_count"] == 4
    assert random_rows["hash"] != top_rows["hash"]
    assert "--grid recipe=lab-random-200,lab-top-score-200" in app.code[0].value


def test_files_it_cannot_read_are_named_with_the_reason(tiny_model, runs_root):
    app = rerun(app_at(PAGE, timeout=120))
    app.radio(key="data_kind").set_value("Upload").run()
    app.file_uploader[0].set_value(
        ("notes.jsonl", b'{"text": "no conversation"}\n', "application/json")
    ).run()
    app.text_input(key="data_model").input("tiny-llama").run()
    app.button(key="data_measure").click().run()
    assert not app.exception
    assert "has no 'conversations'" in shown(app.error[0].value)
    evil = rerun(app_at(PAGE, timeout=120))
    evil.radio(key="data_kind").set_value("Upload").run()
    evil.file_uploader[0].set_value(("evil.exe", b"MZ", "application/octet-stream")).run()
    assert "upload a .jsonl" in shown(evil.error[0].value) and not evil.metric
    hub = rerun(app_at(PAGE, {"source": "nobody/nothing", "model": "tiny-llama"}, timeout=120))
    assert "cannot read nobody/nothing from the Hub" in shown(hub.error[0].value)
    planted = rerun(app_at(PAGE, {"source": "/etc/passwd", "model": "tiny-llama"}))
    assert not planted.error and not planted.metric  # a path from the URL is never read


def test_a_visitor_of_a_locked_deploy_measures_only_project_files_whole_with_known_models(
    tiny_model, runs_root, monkeypatch
):
    monkeypatch.setenv("PEFT_OWNER_PASSWORD", "correct horse battery staple")
    for query in (
        {"model": "someone/private-model"},  # any Hub repo: the server would download it
        {"split": "train[:10]"},  # every slice a new cache file
        {"source": "nobody/dataset"},  # a Hub dataset: a download
    ):
        app = measured(query)
        assert not app.metric and "Only the owner" in app.warning[0].value, query
    app = measured()  # the project's file with the tiny model: a visitor may look
    assert next(m.value for m in app.metric if m.label == "Rows") == "600"
    assert app.text_input(key="recipe_match").disabled and app.text_input(key="recipe_exclude").disabled
    next(button for button in app.button if button.label == "Save recipe").click().run()
    assert "Only the owner" in app.warning[0].value and not (runs_root / ".recipes").exists()
