from sapiens2.cli.main import main


def test_cli_reports_bad_config(tmp_path, capsys):
    (tmp_path / "c.json").write_text('{"balanse": {}}')
    code = main(
        [
            "curate",
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--config",
            str(tmp_path / "c.json"),
        ]
    )
    assert code == 2
    assert "c.json: config file: unknown key(s) 'balanse'" in capsys.readouterr().err


def test_cli_reports_missing_input(tmp_path, capsys):
    code = main(["curate", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and ("nothing does not exist" in err or "curate' extra" in err)
