"""Unit tests of the datadriven runner: parsing, comparing, rewriting."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftkv.testing.scripts.datadriven import (
    CmdArg,
    DataDrivenError,
    OutputMismatch,
    ParseError,
    TestCase,
    parse,
    parse_line,
    rewrite_requested,
    run_file,
    run_script,
)

SCRIPT = """\
# A comment before the first case.
echo a b=1 c=(1, 2,3)
first input line
second input line
----
echo a b=1 c=(1, 2, 3)

# A comment between cases.

blank
----
----
x

y
----
----

empty
----

last
----
last
"""


def echo_handler(case: TestCase) -> str:
    match case.command:
        case "echo":
            return case.command_line
        case "blank":
            return "x\n\ny\n"
        case "empty":
            return ""
        case "last":
            return "last"
        case _:
            raise AssertionError(case.command)


# -- parse_line --------------------------------------------------------------------------------


def test_parse_line_forms() -> None:
    command, args = parse_line("cmd pos key=value list=(1, 2,3) empty= nested=(a (b, c), d)")
    assert command == "cmd"
    assert args == (
        CmdArg("pos"),
        CmdArg("key", ("value",)),
        CmdArg("list", ("1", "2", "3")),
        CmdArg("empty", ("",)),
        CmdArg("nested", ("a (b, c)", "d")),
    )


def test_parse_line_empty_and_bare_command() -> None:
    assert parse_line("   ") == ("", ())
    assert parse_line("stabilize") == ("stabilize", ())


def test_parse_line_positional_parenthesised_groups() -> None:
    assert parse_line("partition (1,2) (3)")[1] == (CmdArg("(1,2)"), CmdArg("(3)"))


@pytest.mark.parametrize("line", ["cmd key=(1, 2", "cmd =value"])
def test_parse_line_errors_name_the_column(line: str) -> None:
    with pytest.raises(ValueError, match="column"):
        parse_line(line)


def test_cmd_arg_str_round_trips() -> None:
    for text in ["k", "k=v", "k=(1, 2)"]:
        assert str(parse_line(f"cmd {text}")[1][0]) == text


# -- parse ---------------------------------------------------------------------------------------


def test_parse_cases_with_line_numbers_input_and_expected() -> None:
    cases = parse(SCRIPT, "script.txt").cases
    assert [(case.command, case.line) for case in cases] == [
        ("echo", 2),
        ("blank", 10),
        ("empty", 19),
        ("last", 22),
    ]
    echo, blank, empty, last = cases
    assert echo.input == "first input line\nsecond input line"
    assert echo.expected == "echo a b=1 c=(1, 2, 3)\n"
    assert echo.position == "script.txt:2"
    assert blank.input == ""
    assert blank.expected == "x\n\ny\n"
    assert empty.expected == ""
    assert last.expected == "last\n"


def test_parse_backslash_continuation() -> None:
    case = parse("cmd a \\\n  b=2\n----\nok\n").cases[0]
    assert case.args == (CmdArg("a"), CmdArg("b", ("2",)))
    assert case.line == 1


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("cmd\n", 1, "no '----' separator"),
        ("ok\n----\nok\n\n----\n", 5, "without a command"),
        ("cmd\n----\n----\nx\n", 1, "unterminated"),
        ("cmd\n----\n----\nx\n----\n----\ntrailing\n", 7, "blank line"),
        ("cmd key=(1\n----\n", 1, "column"),
    ],
)
def test_parse_errors_name_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ParseError, match=rf"^f\.txt:{line}: .*{message}"):
        parse(text, "f.txt")


def test_argument_helpers() -> None:
    case = parse("cmd 1 2 voters=(1,2,3) flag=true n=7 none=()\n----\n").cases[0]
    assert case.positional() == ["1", "2"]
    assert case.ints("voters") == [1, 2, 3]
    assert case.ints("none") == []
    assert case.ints("missing") == []
    assert case.bool_arg("flag", default=False) is True
    assert case.bool_arg("missing", default=True) is True
    assert case.int_arg("n", 0) == 7
    assert case.int_arg("missing", 5) == 5
    assert case.has_arg("none")
    assert case.keyed()["voters"] == ("1", "2", "3")
    with pytest.raises(DataDrivenError, match=r"<string>:1: .*voters takes one value"):
        case.int_arg("voters", 0)
    with pytest.raises(DataDrivenError, match="not a boolean"):
        parse("cmd flag=maybe\n----\n").cases[0].bool_arg("flag", default=False)
    with pytest.raises(DataDrivenError, match="not an integer"):
        parse("cmd n=x\n----\n").cases[0].int_arg("n", 0)


# -- run -----------------------------------------------------------------------------------------


def test_run_passes_when_outputs_match() -> None:
    assert run_script(parse(SCRIPT), echo_handler, rewrite=False) == SCRIPT


def test_mismatch_shows_position_input_and_diff() -> None:
    text = "cmd x\nsome input\n----\none\ntwo\n\nnever\n----\nran\n"
    ran: list[str] = []

    def handler(case: TestCase) -> str:
        ran.append(case.command)
        return "one\nTWO\n"

    with pytest.raises(OutputMismatch) as raised:
        run_script(parse(text, "t.txt"), handler, rewrite=False)
    message = str(raised.value)
    assert message.startswith("t.txt:1: output of `cmd x` does not match")
    assert "  some input" in message
    assert "-two\n+TWO\n" in message
    assert "--rewrite" in message
    assert ran == ["cmd"], "the first mismatch stops the file"
    assert isinstance(raised.value, AssertionError)


def test_handler_exception_gets_a_note_with_the_position() -> None:
    def handler(case: TestCase) -> str:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError) as raised:
        run_script(parse("\n\ncrash 1\n----\n", "t.txt"), handler, rewrite=False)
    assert raised.value.__notes__ == ["while running t.txt:3: crash 1"]


def test_output_without_trailing_newline_matches() -> None:
    run_script(parse("c\n----\nok\n"), lambda case: "ok", rewrite=False)


# -- rewrite ---------------------------------------------------------------------------------------


def test_rewrite_with_unchanged_outputs_is_the_identity() -> None:
    assert run_script(parse(SCRIPT), echo_handler, rewrite=True) == SCRIPT


def test_rewrite_replaces_outputs_and_keeps_comments_and_inputs() -> None:
    before = (
        "# comment\n"
        "a\n"
        "input\n"
        "----\n"
        "stale\n"
        "\n"
        "# second comment\n"
        "b\n"
        "----\n"
        "----\n"
        "stale\n"
        "\n"
        "blank\n"
        "----\n"
        "----\n"
        "\n"
        "c\n"
        "----\n"
    )
    outputs = {"a": "fresh\n", "b": "one line\n", "c": "with\n\nblank\n"}
    after = run_script(parse(before), lambda case: outputs[case.command], rewrite=True)
    assert after == (
        "# comment\n"
        "a\n"
        "input\n"
        "----\n"
        "fresh\n"
        "\n"
        "# second comment\n"
        "b\n"
        "----\n"
        "one line\n"
        "\n"
        "c\n"
        "----\n"
        "----\n"
        "with\n"
        "\n"
        "blank\n"
        "----\n"
        "----\n"
    )
    # The rewritten text parses back to the outputs it was written with.
    assert run_script(parse(after), lambda case: outputs[case.command], rewrite=False) == after


def test_rewrite_adds_separator_blank_line_between_cases() -> None:
    before = "a\n----\nx\n\nb\n----\ny\n"
    after = run_script(parse(before), lambda case: "", rewrite=True)
    assert after == "a\n----\n\nb\n----\n"
    assert [case.expected for case in parse(after).cases] == ["", ""]


def test_output_starting_with_separator_uses_double_separator() -> None:
    after = run_script(parse("a\n----\n"), lambda case: "----\nx\n", rewrite=True)
    assert parse(after).cases[0].expected == "----\nx\n"


def test_run_file_rewrites_in_place(tmp_path: Path) -> None:
    path = tmp_path / "script.txt"
    path.write_text("# keep me\ncmd\n----\nold\n", encoding="utf-8")
    with pytest.raises(OutputMismatch, match=r"script\.txt:2:"):
        run_file(path, lambda case: "new", rewrite=False)
    run_file(path, lambda case: "new", rewrite=True)
    assert path.read_text(encoding="utf-8") == "# keep me\ncmd\n----\nnew\n"
    run_file(path, lambda case: "new", rewrite=False)


def test_run_file_does_not_write_when_a_handler_fails(tmp_path: Path) -> None:
    path = tmp_path / "script.txt"
    text = "a\n----\nold\n\nb\n----\nold\n"
    path.write_text(text, encoding="utf-8")

    def handler(case: TestCase) -> str:
        if case.command == "b":
            raise ValueError("bad")
        return "new"

    with pytest.raises(ValueError, match="bad"):
        run_file(path, handler, rewrite=True)
    assert path.read_text(encoding="utf-8") == text


def test_rewrite_env_var(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RAFTKV_REWRITE", raising=False)
    assert not rewrite_requested()
    monkeypatch.setenv("RAFTKV_REWRITE", "1")
    assert rewrite_requested()
    path = tmp_path / "script.txt"
    path.write_text("cmd\n----\nold\n", encoding="utf-8")
    run_file(path, lambda case: "new")
    assert path.read_text(encoding="utf-8") == "cmd\n----\nnew\n"
    monkeypatch.setenv("RAFTKV_REWRITE", "0")
    assert not rewrite_requested()
