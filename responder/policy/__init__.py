"""Rule files: YAML that security engineers review in a pull request, compiled into a RuleSet."""

from responder.policy.loader import PolicyError, load_rules, rule_files

__all__ = ["PolicyError", "load_rules", "rule_files"]
