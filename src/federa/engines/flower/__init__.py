"""federa as a Flower app: ServerApp, ClientApp and what travels between them."""

from federa.errors import FederaError


class FlowerError(FederaError):
    """The federation cannot go on: too few replies, missing or misconfigured SuperNodes."""
