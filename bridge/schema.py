"""The JSON Schema of the desired-state file, generated from the settings catalogue, so editors
(VS Code's YAML extension, IntelliJ) autocomplete setting names and allowed values.

Use it with a first line ``# yaml-language-server: $schema=teams-bridge.schema.json``.
"""

from __future__ import annotations

from typing import Any

from . import catalogue, roles
from .rules import RULE_IDS


def desired_state_schema() -> dict[str, Any]:
    settings = {name: s.json_schema() for name, s in sorted(catalogue.SETTINGS.items())}
    policy = {
        "type": ["object", "null"],
        "description": "A messaging policy: only the settings named here are managed.",
        "properties": {
            **settings,
            "ensure": {"enum": ["present", "absent"], "default": "present"},
            "extra": {
                "type": "object",
                "description": "Settings newer than teams-bridge's catalogue, sent as written.",
                "additionalProperties": {"type": ["string", "boolean", "number", "null"]},
            },
        },
        "additionalProperties": False,
    }
    group = {
        "type": "object",
        "required": ["group"],
        "properties": {
            "group": {"type": "string", "description": "Display name (exactly one group) or id."},
            "policy": {"type": "string"},
            "rank": {"type": "integer", "minimum": 1, "description": "1 = highest precedence."},
            "ensure": {"enum": ["present", "absent"]},
        },
        "additionalProperties": False,
    }
    user = {
        "type": "object",
        "required": ["user"],
        "properties": {
            "user": {"type": "string", "description": "UPN or object id."},
            "policy": {"type": "string"},
            "ensure": {"enum": ["present", "absent"]},
        },
        "additionalProperties": False,
    }
    value = {"type": ["string", "number"], "minLength": 1}
    clause = {
        "type": "object",
        "minProperties": 1,
        "description": "Every key must match; a list is any of; * and ? are wildcards; case "
        "is ignored.",
        "properties": {
            name: (
                {"type": "boolean"}
                if name == roles.ACCOUNT_ENABLED
                else {"anyOf": [value, {"type": "array", "items": value, "minItems": 1}]}
            )
            for name in roles.ATTRIBUTES
        },
        "additionalProperties": False,
    }
    role = {
        "type": "object",
        "required": ["role", "policy", "where"],
        "properties": {
            "role": {"type": "string", "description": "A name for plans, reports and explain."},
            "policy": {"type": "string"},
            "where": clause,
            "except": clause,
        },
        "additionalProperties": False,
    }
    flag = {"type": "boolean", "default": False}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://teams-bridge.dev/schema/desired-state.json",
        "title": "teams-bridge desired state",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "tenant": {
                "type": "string",
                "description": "Guard: refuse to touch any other tenant (id or domain).",
            },
            "policies": {"type": "object", "additionalProperties": policy},
            "assignments": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "groups": {"type": "array", "items": group},
                    "users": {"type": "array", "items": user},
                    "roles": {"type": "array", "items": role},
                },
            },
            "prune": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "policies": flag,
                    "group_assignments": flag,
                    "user_assignments": flag,
                },
            },
            "safety": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "max_policy_deletes": {"type": "integer", "minimum": 0, "default": 3},
                    "max_user_change_share": {
                        "anyOf": [
                            {"type": "number", "minimum": 0, "maximum": 1},
                            {"type": "string", "pattern": "^[0-9.]+%$"},
                        ],
                        "default": 0.1,
                    },
                    "user_change_floor": {"type": "integer", "minimum": 0, "default": 50},
                    "protect_clinical_settings": {"type": "boolean", "default": True},
                },
            },
            "rules": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    **{rule: {"type": "boolean", "default": True} for rule in RULE_IDS},
                    "clinicians": {
                        "type": "object",
                        "description": "Who the clinicians are: roles and/or a where-clause.",
                        "properties": {
                            "roles": {"type": "array", "items": {"type": "string"}},
                            "where": clause,
                        },
                        "additionalProperties": False,
                    },
                    "clinical_policies": {"type": "array", "items": {"type": "string"}},
                    "clinical_pattern": {
                        "anyOf": [
                            {"type": "string", "format": "regex"},
                            {"const": False},
                        ]
                    },
                },
            },
        },
    }
