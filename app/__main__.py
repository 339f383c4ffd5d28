from carrygate.app.cli import main

main()
