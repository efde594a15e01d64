from chargeward.cli.main import run

run()
