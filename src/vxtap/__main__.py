from vxtap.cli import main

main()
