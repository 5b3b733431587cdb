from actreg_cli.cli import app

app(prog_name="actreg")
