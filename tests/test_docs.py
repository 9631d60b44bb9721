"""Every document reads as its reader needs: short enough to read whole, in sentences of
at most 40 words (code blocks and tables aside, each list item a sentence at least)."""

import re
import shlex

import pytest
import yaml

from . import tools
from .baking import KIT, TEMPLATE, bake, run
from .prose import sentences, words
from .sources import readme_block, sh_block

LONGEST_SENTENCE = 40
TEMPLATE_DOCS = [
    TEMPLATE / "README.md",
    TEMPLATE / "CONTRIBUTING.md",
    TEMPLATE / "BENCHMARKS.md",
    TEMPLATE / "UPGRADING.md",
    KIT / "README.md",
    KIT / "CHANGELOG.md",
]
SERVICE_DOCS = ["README.md", "monitoring/README.md", "RUNBOOKS.md"]


def too_long(path):
    return [
        f"{words(sentence)} words: {sentence[:100]}"
        for sentence in sentences(path.read_text(encoding="utf-8"))
        if words(sentence) > LONGEST_SENTENCE
    ]


@pytest.mark.parametrize("path", TEMPLATE_DOCS, ids=lambda path: str(path.relative_to(TEMPLATE)))
def test_the_templates_documents_have_no_sentence_past_40_words(path):
    assert too_long(path) == []


def test_the_template_readme_is_for_who_generates_a_service():
    readme = (TEMPLATE / "README.md").read_text()

    assert len(readme.splitlines()) <= 200
    for section in ("## Quick start", "## Generating your own service", "## Publishing the kit"):
        assert f"\n{section}\n" in readme


@pytest.mark.parametrize(
    "answers",
    [
        {},
        {"metrics_auth": "ip_whitelist"},
        {
            "alert_receiver": "email",
            "alert_email": "payments-oncall@example.org",
            "alert_smarthost": "smtp.example.org:587",
        },
        {"alert_receiver": "webhook"},
        {"alert_receiver": "slack"},
        {"alert_receiver": "pagerduty"},
        {"alert_receiver": "opsgenie"},
        {"tracing": "otlp"},
    ],
    ids=lambda answers: "-".join(f"{k}:{v}" for k, v in answers.items()) or "defaults",
)
def test_the_services_documents_are_short_and_split_by_reader(cookies, answers):
    project = bake(cookies, **answers)
    readme = (project / "README.md").read_text()

    # A bake that traces adds its Traces section and OpenTelemetry's settings.
    assert len(readme.splitlines()) <= (330 if answers.get("tracing") == "otlp" else 300)
    # The kit's private modules are its own business.
    assert re.findall(r"\b_\w+\.py\b", readme) == []
    for name in SERVICE_DOCS:
        assert too_long(project / name) == [], name


# The cf CLI's commands the documents give, with the positional arguments each takes and
# its options (those that take a value marked True), from `cf help -a` (cf CLI v8).
CF_COMMANDS = {
    "push": (0, 1, {"-f": True, "--strategy": True, "--no-start": False}),
    "set-env": (3, 3, {}),
    "restage": (1, 1, {}),
    "restart": (1, 1, {}),
    "start": (1, 1, {}),
    "stop": (1, 1, {}),
    "scale": (1, 1, {"-i": True, "-m": True}),
    "logs": (1, 1, {"--recent": False}),
    "events": (1, 1, {}),
    "app": (1, 1, {"--guid": False}),
    "rollback": (1, 1, {}),
    "restart-app-instance": (2, 2, {}),
    "set-label": (3, 9, {}),
    "set-annotation": (3, 9, {}),
    "ssh": (1, 1, {"-L": True}),
    "add-network-policy": (2, 2, {"--port": True, "--protocol": True}),
    "map-route": (2, 2, {"--hostname": True}),
    "set-space-role": (4, 4, {"--client": False}),
    "create-user-provided-service": (1, 1, {"-r": True, "-p": True, "-l": True}),
    "bind-route-service": (2, 2, {"--hostname": True, "--path": True}),
}
# Commands whose first positional argument is an app's name (set-label's is its type).
APP_FIRST = set(CF_COMMANDS) - {
    "push",
    "set-label",
    "set-annotation",
    "set-space-role",
    "create-user-provided-service",
    "bind-route-service",
}
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_-]*")


def cf_commands(project):
    """Every `cf` command of the service's documents' sh blocks and of the manifests'
    comments, as the words a shell would pass."""
    found = []
    for name in SERVICE_DOCS:
        text = (project / name).read_text()
        for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
            found += [line for line in block.splitlines() if line.startswith("cf ")]
    for manifest in [project / "manifest.yml", *project.glob("monitoring/deploy/*.yml")]:
        found += re.findall(r"^#\s+(cf .+)$", manifest.read_text(), re.MULTILINE)
    return [shlex.split(line.split("  #")[0]) for line in found]


def test_every_cf_command_the_documents_give_names_what_the_manifests_hold(cookies):
    """cf cannot run here: each command is checked against the cf CLI's own arguments, and
    names an app that a manifest of the service declares, and a manifest that exists."""
    project = bake(cookies, alert_receiver="slack")
    apps = {
        app["name"]
        for manifest in [project / "manifest.yml", *project.glob("monitoring/deploy/*.yml")]
        for app in (yaml.safe_load(manifest.read_text()) or {}).get("applications", [])
    }
    commands = cf_commands(project)

    assert len(commands) >= 10
    for argv in commands:
        _, command, *arguments = argv
        least, most, options = CF_COMMANDS[command]
        positional = []
        while arguments:
            argument = arguments.pop(0)
            if argument.startswith("-"):
                assert argument in options, f"cf {command} has no {argument}: {argv}"
                if options[argument]:
                    value = arguments.pop(0)
                    if argument == "-f":
                        assert (project / value).exists() or (
                            project / "monitoring" / value
                        ).exists()
            else:
                positional.append(argument)
        assert least <= len(positional) <= most, argv
        if command in APP_FIRST:
            app = positional[0]
            assert app in apps or PLACEHOLDER.fullmatch(app), f"no app {app!r}: {argv}"


def test_the_shared_token_is_made_as_the_readme_says_in_every_bake(cookies):
    """The Credentials section's command, even in a bake whose default is the whitelist
    and whose alerts go nowhere: monitoring/secrets/ is there, and git ignores it."""
    project = bake(cookies, metrics_auth="ip_whitelist")
    make_token = [
        line for line in sh_block(project / "README.md", "### Credentials") if "openssl" in line
    ]
    tools.require("openssl")

    run(["bash", "-c", *make_token], cwd=project)

    assert len((project / "monitoring" / "secrets" / "metrics-token").read_text()) == 64
    run(["git", "init", "--quiet"], cwd=project)
    ignored = run(["git", "status", "--porcelain", "--ignored"], cwd=project).stdout
    assert "!! monitoring/secrets/metrics-token" in ignored.splitlines()


def test_the_alerts_are_checked_as_the_readme_says(cookies):
    project = bake(cookies)
    commands = readme_block(project, "## Alerts")
    promtool = tools.require("promtool")

    for command in commands:
        assert command.startswith("promtool "), command
        checked = run([promtool, *shlex.split(command)[1:]], cwd=project)
        assert "SUCCESS" in checked.stdout + checked.stderr, command
