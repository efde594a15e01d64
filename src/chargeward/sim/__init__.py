"""The fleet simulator: many real agents in one event loop, with a simulated flash and link.

Every simulated charger is the reference agent (:class:`chargeward.agent.agent.Agent`) with its
own state directory, speaking OCPP 2.0.1 over a real websocket to a real server and verifying
and installing real signed images.  Only two things are simulated:

- the **flash** (:mod:`chargeward.sim.flash`): a state directory on tmpfs, where a power loss
  stops the agent at a named write step and starts a new agent on the same directory;
- the **link** (:mod:`chargeward.sim.link`): a loopback proxy per site that adds latency,
  shares a bandwidth cap, drops connections, flips bytes and takes stations offline.

    $ chargeward sim run examples/sim/ci-small.toml --start-server --json summary.json
"""
