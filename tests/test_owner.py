"""A public deploy with an owner: everyone browses; only the owner changes shared state.

The pages run in Streamlit's AppTest with the owner secret in the environment (as an operator
sets it on Community Cloud) or with Streamlit's [auth] secrets and AppTest's simulated login
(no identity provider can be reached here: the OIDC round trip itself is Streamlit's and is
never run).
"""

import time

import pytest
from conftest import app_at, shown

from core.access.owner import LockedOut, PasswordGate, access_policy, owners_from
from core.evaluate.ratings import load_ratings
from core.store.files import write_jsonl_atomic
from core.store.runs import create_run, initial_status
from core.store.seed import SEED_MARKER
from core.train.config import default_config

PASSWORD = "correct horse battery staple"
AUTH = {
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": "not-a-real-secret",
    "client_id": "id",
    "client_secret": "secret",
    "server_metadata_url": "https://accounts.example.com/.well-known/openid-configuration",
}
CSV = (
    b"run_name,model_name,dataset_split,lora_r,max_steps,train_loss,train_runtime_sec,peak_gpu_GB,lora_gpu_GB\n"
    b"colab_r32,unsloth/Llama-3.2-1B-Instruct-bnb-4bit,train[:5000],32,300,0.95,1200.5,2.4,1.1\n"
)


# --- who the owner is -----------------------------------------------------------------------


def test_the_policy_follows_what_the_operator_configured(monkeypatch):
    monkeypatch.delenv("PEFT_OWNER_PASSWORD", raising=False)
    monkeypatch.delenv("PEFT_OWNERS", raising=False)
    assert access_policy({}).mode == "open"
    assert access_policy({"PEFT_OWNER_PASSWORD": PASSWORD}).mode == "password"
    monkeypatch.setenv("PEFT_OWNER_PASSWORD", PASSWORD)
    assert access_policy({}).password == PASSWORD
    assert PASSWORD not in repr(access_policy({}))
    login = access_policy({"auth": AUTH, "PEFT_OWNERS": "Ada@Example.com, bob@example.com"})
    assert login.mode == "login" and login.owners == {"ada@example.com", "bob@example.com"}
    # Owners named without Streamlit's [auth]: nobody could log in, so the password decides.
    assert access_policy({"PEFT_OWNERS": "ada@example.com"}).mode == "password"
    assert owners_from(" a@x.org  b@x.org,c@x.org ") == {"a@x.org", "b@x.org", "c@x.org"}


def test_wrong_passwords_lock_the_gate_for_a_while():
    policy = access_policy({"PEFT_OWNER_PASSWORD": PASSWORD})
    gate = PasswordGate(max_failures=3, lockout_s=0.5)
    assert gate.check(policy, PASSWORD)
    assert not gate.check(policy, PASSWORD[:-1])
    assert not gate.check(policy, "")
    assert not gate.check(policy, PASSWORD + " ")
    with pytest.raises(LockedOut, match="try again in"):
        gate.check(policy, PASSWORD)  # even the right one is not taken now
    time.sleep(0.6)
    assert gate.check(policy, PASSWORD)


# --- the pages ------------------------------------------------------------------------------


@pytest.fixture
def locked(runs_root, monkeypatch):
    """A runs root with one completed run, on a deploy whose owner has a password."""
    runs_root.mkdir()
    (runs_root / SEED_MARKER).write_text("")
    monkeypatch.setenv("PEFT_OWNER_PASSWORD", PASSWORD)
    return runs_root


def button(app, label):
    return next(b for b in app.button if shown(b.label) == label)


def unlock(app, password):
    app.text_input(key="owner_password").input(password)
    button(app, "Unlock").click().run()
    return app


def test_browsing_works_locked_and_an_import_needs_the_owner(locked):
    app = app_at("Home.py")
    app.run()
    assert any("Changes need the owner" in caption.value for caption in app.sidebar.caption)
    app.file_uploader[0].set_value(("experiments_log.csv", CSV, "text/csv")).run()
    button(app, "Import runs").click().run()
    assert not app.exception
    assert any("Only the owner" in warning.value for warning in app.warning)
    assert sorted(path.name for path in locked.iterdir()) == [SEED_MARKER]

    unlock(app, "guess")
    assert [error.value for error in app.sidebar.error] == ["That is not the owner password."]
    unlock(app, PASSWORD)
    assert any("Owner" in caption.value for caption in app.sidebar.caption)
    button(app, "Import runs").click().run()
    assert "imported 1 run(s)" in shown(app.success[0].value)
    assert (locked / "colab_r32").is_dir()

    button(app, "Lock").click().run()
    assert any("Changes need the owner" in caption.value for caption in app.sidebar.caption)


def test_delete_and_job_actions_need_the_owner(locked):
    path = create_run(locked, "queued_run", default_config(), status=initial_status("queued", 30))
    app = app_at("pages/2_Run.py", {"run": "queued_run"})
    app.run()
    button(app, "Start").click().run()
    assert any("Only the owner" in warning.value for warning in app.warning)
    assert not (path / "jobs" / "train.launch.json").exists()  # no job was launched
    button(app, "Delete…").click().run()
    button(app, "Yes, delete queued_run").click().run()
    assert any("Only the owner" in warning.value for warning in app.warning)
    assert path.is_dir()


def test_starting_training_needs_the_owner(locked):
    app = app_at("pages/1_Train.py")
    app.run()
    button(app, "Start training").click().run()
    assert not app.exception
    assert any("Only the owner" in warning.value for warning in app.warning)
    assert sorted(p.name for p in locked.iterdir()) == [SEED_MARKER]


def test_a_rating_needs_the_owner(locked):
    run = create_run(locked, "rated", default_config(), status=initial_status("completed", 30))
    (run / "eval").mkdir()
    write_jsonl_atomic(
        run / "eval" / "adapter.jsonl",
        [
            {
                "variant": "adapter",
                "prompt_set": "lab",
                "prompt_id": "vpn",
                "prompt": "What is a VPN?",
                "answer": "A tunnel.",
                "checks": [],
                "passed": True,
            }
        ],
    )
    app = app_at("pages/3_Compare.py", {"runs": "rated"})
    app.run()
    rating = next(box for box in app.selectbox if box.label == "Rating")
    rating.set_value(5)
    button(app, "Save rating").click().run()
    assert any("Only the owner" in shown(error.value) for error in app.error)
    assert load_ratings(run) == {}


def test_a_login_on_the_owners_list_unlocks_and_any_other_does_not(runs_root, monkeypatch):
    monkeypatch.delenv("PEFT_OWNER_PASSWORD", raising=False)
    runs_root.mkdir()
    (runs_root / SEED_MARKER).write_text("")

    def home(user):
        app = app_at("Home.py")
        app.secrets["auth"] = AUTH
        app.secrets["PEFT_OWNERS"] = "ada@example.com"
        app.user = user
        app.run()
        assert not app.exception
        app.file_uploader[0].set_value(("experiments_log.csv", CSV, "text/csv")).run()
        button(app, "Import runs").click().run()
        return app

    stranger = home({"is_logged_in": True, "email": "eve@example.com"})
    assert any("not one of the owners" in caption.value for caption in stranger.sidebar.caption)
    assert not (runs_root / "colab_r32").exists()
    logged_out = home({"is_logged_in": False})
    assert "Log in" in [b.label for b in logged_out.sidebar.button]
    assert not (runs_root / "colab_r32").exists()
    unverified = home({"is_logged_in": True, "email": "ada@example.com", "email_verified": False})
    assert not (runs_root / "colab_r32").exists() and not unverified.success
    owner = home({"is_logged_in": True, "email": "Ada@Example.com", "email_verified": True})
    assert "imported 1 run(s)" in shown(owner.success[0].value)
    assert (runs_root / "colab_r32").is_dir()


def test_an_open_deploy_says_so(runs_root, monkeypatch):
    monkeypatch.delenv("PEFT_OWNER_PASSWORD", raising=False)
    app = app_at("Home.py")
    app.run()
    assert any("Open to everyone" in caption.value for caption in app.sidebar.caption)


def test_study_cards_offer_a_file_path_on_the_server_to_the_owner_only(locked):
    app = app_at("pages/4_Study_cards.py")
    app.run()
    assert not app.exception
    model = next(box for box in app.selectbox if box.label == "Model")
    assert "A GGUF file on this machine..." not in model.options
    unlock(app, PASSWORD)
    model = next(box for box in app.selectbox if box.label == "Model")
    assert "A GGUF file on this machine..." in model.options
