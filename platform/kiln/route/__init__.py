"""The route stage, in the data plane: what a request meets before it reaches a dyno."""
