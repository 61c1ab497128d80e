from echora_server.cli import main

main()
