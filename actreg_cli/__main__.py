from actreg_cli.cli import main

main()
