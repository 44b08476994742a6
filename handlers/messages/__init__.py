"""Block Kit messages: pure functions from plain values to slack_sdk blocks, one module each."""
