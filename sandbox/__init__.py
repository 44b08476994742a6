"""The sandbox: what the demo, the tests and the benchmarks run the bot against.

`sandbox.slack` is a local Slack workspace (Web API, signed requests, Socket Mode),
`sandbox.demo_environment` builds Compose-labelled containers from a FROM-scratch image,
`sandbox.throwaway_postgres` starts a private PostgreSQL cluster, and `sandbox.demo` plays
an incident. The bot itself never needs this package.
"""
