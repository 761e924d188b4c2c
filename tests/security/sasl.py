"""Client settings for the local broker's SASL/PLAIN listener."""

from __future__ import annotations

__all__ = ["sasl_env"]


def sasl_env(user: str, password: str | None = None) -> dict[str, str]:
    """Client settings for the local broker's SASL/PLAIN listener (password omitted: it comes from elsewhere)."""
    import localstack

    env = {"DESKGEN_KAFKA_BOOTSTRAP_SERVERS": localstack.kafka_sasl_bootstrap(),
           "DESKGEN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "DESKGEN_KAFKA_SASL_MECHANISM": "PLAIN",
           "DESKGEN_KAFKA_SASL_USERNAME": user}
    return env if password is None else {**env, "DESKGEN_KAFKA_SASL_PASSWORD": password}
