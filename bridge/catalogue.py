"""Every CsTeamsMessagingPolicy setting teams-bridge knows: its type, its allowed values, and how
values are normalised so that comparisons never report case or spelling differences as drift.

This is the one place a setting is defined. A setting the service returns that is not here (a
newer MicrosoftTeams release) is kept as-is, shown in reports and exports, and can be set by name
through a policy's ``extra:`` mapping.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .yamlloc import shown

# Fields the service returns on every policy that are not settings; never drift.
NON_SETTING_FIELDS = frozenset({"Identity", "Key", "ConfigMetadata", "ConfigId", "DataSource"})


_NON_SETTING_FOLDED = frozenset(n.casefold() for n in NON_SETTING_FIELDS)


def is_setting_field(name: str) -> bool:
    return name not in NON_SETTING_FIELDS and not name.startswith("@odata") and name != "ensure"


def is_service_field(name: str) -> bool:
    """Whether ``name``, in any casing, is one of the fields the service puts on every policy
    (Identity, Key, ...): never a setting a desired-state file can set."""
    folded = name.casefold()
    return folded in _NON_SETTING_FOLDED or folded.startswith("@odata")


SERVICE_FIELDS_TEXT = ", ".join(sorted(NON_SETTING_FIELDS)) + " and @odata.*"

# PowerShell's common parameters (about_CommonParameters) with their aliases. The PowerShell
# transport splats a policy's settings into New-/Set-CsTeamsMessagingPolicy by name, so a setting
# with one of these names would change the call itself: -WhatIf writes nothing, -OutVariable
# overwrites a variable of the driver (its cmdlet allow-list), -ErrorAction SilentlyContinue hides
# a failed write. ``powershell_driver.ps1`` refuses the same names (tests check the two agree).
COMMON_PARAMETERS: Mapping[str, str] = {
    "Verbose": "vb",
    "Debug": "db",
    "ErrorAction": "ea",
    "WarningAction": "wa",
    "InformationAction": "infa",
    "ProgressAction": "proga",
    "ErrorVariable": "ev",
    "WarningVariable": "wv",
    "InformationVariable": "iv",
    "OutVariable": "ov",
    "OutBuffer": "ob",
    "PipelineVariable": "pv",
    "WhatIf": "wi",
    "Confirm": "cf",
    "UseTransaction": "usetx",
}
# Parameters the policy cmdlets bind that are not settings (the policy's name, switches, the
# tenant, a whole policy object).
CMDLET_PARAMETERS = (
    "Identity",
    "Force",
    "Tenant",
    "Instance",
    "InMemory",
    "Filter",
    "LocalStore",
    "PassThru",
    "MsftInternalProcessingMode",
)
_PARAMETER_WORDS: tuple[tuple[str, str], ...] = (
    *((name, name) for name in COMMON_PARAMETERS),
    *((alias, name) for name, alias in COMMON_PARAMETERS.items()),
    *((name, name) for name in CMDLET_PARAMETERS),
)


def reserved_parameter(name: str) -> str | None:
    """The cmdlet parameter that is not a setting which PowerShell would bind ``name`` to, when
    splatted into the policy cmdlets: an exact match of a parameter or alias in any casing, or,
    as PowerShell binds any unambiguous prefix of a parameter name, a prefix of one (``OutVar``
    is -OutVariable). None when ``name`` is free to be a setting."""
    folded = name.casefold()
    for word, parameter in _PARAMETER_WORDS:
        if word.casefold().startswith(folded):
            return parameter
    return None


@dataclass(frozen=True)
class Setting:
    name: str
    kind: str  # "bool" | "enum" | "string"
    values: tuple[str, ...] = ()  # enum values in the service's casing
    doc: str = ""
    deprecated: str = ""
    # Alternative spellings accepted in a desired file, mapped to the canonical value.
    aliases: Mapping[str, Any] | None = None

    def normalize(self, value: Any) -> Any:
        """The canonical form of ``value``; ``ValueError`` with a message for a user if invalid."""
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and self.aliases and value.casefold() in self.aliases:
                return self.aliases[value.casefold()]
            accepted = "true or false"
            if self.aliases:
                accepted += " (or " + ", ".join(sorted({k.title() for k in self.aliases})) + ")"
            raise ValueError(f"{self.name} takes {accepted}, not {shown(value)}")
        if self.kind == "enum":
            if isinstance(value, str):
                for allowed in self.values:
                    if allowed.casefold() == value.casefold():
                        return allowed
            raise ValueError(
                f"{shown(value)} is not allowed for {self.name}; allowed: {', '.join(self.values)}"
            )
        if value is None or isinstance(value, str):
            return value
        what = shown(value)
        if not isinstance(value, dict | list):
            what = f"{type(value).__name__} {what}"
        raise ValueError(f"{self.name} takes text, not {what}")

    def json_schema(self) -> dict[str, Any]:
        if self.kind == "bool":
            schema: dict[str, Any] = {"type": "boolean"}
            if self.aliases:
                schema = {"anyOf": [schema, {"type": "string", "enum": ["Enabled", "Disabled"]}]}
        elif self.kind == "enum":
            schema = {"type": "string", "enum": list(self.values)}
        else:
            schema = {"type": ["string", "null"]}
        if self.doc:
            schema["description"] = self.doc
        if self.deprecated:
            schema["deprecated"] = True
        return schema


_ENABLED_DISABLED = {"enabled": True, "disabled": False, "true": True, "false": False}

_BOOLS = {
    "AllowPriorityMessages": "Urgent messages re-notify every 2 minutes for up to 20 minutes "
    "until read.",
    "AllowUrlPreviews": "Show previews of links.",
    "AllowOwnerDeleteMessage": "Owners can delete any message in their channels.",
    "AllowUserEditMessage": "Users can edit their sent messages.",
    "AllowUserDeleteMessage": "Users can delete their sent messages.",
    "UsersCanDeleteBotMessages": "Users can delete messages sent by bots.",
    "AllowUserDeleteChat": "Users can delete chats.",
    "AllowUserChat": "Users can chat at all.",
    "AllowRemoveUser": "Users can remove people from group chats.",
    "AllowGiphy": "Giphy in conversations.",
    "AllowGiphyDisplay": "Display Giphy images others send.",
    "AllowPasteInternetImage": "Paste images from the internet.",
    "AllowMemes": "Memes in conversations.",
    "AllowImmersiveReader": "Immersive Reader for messages.",
    "AllowStickers": "Stickers in conversations.",
    "AllowUserTranslation": "Translate messages.",
    "AllowSmartReply": "Suggested replies.",
    "AllowSmartCompose": "Suggested text while typing.",
    "AllowFullChatPermissionUserToDeleteAnyMessage": "Full-permission users can delete any "
    "message in supervised chats.",
    "AllowFluidCollaborate": "Loop components in chat.",
    "AllowVideoMessages": "Video clips in chat.",
    "AllowCommunicationComplianceEndUserReporting": "Users can report offensive messages.",
    "AllowChatWithGroup": "Chat with a distribution or mail-enabled group.",
    "AllowSecurityEndUserReporting": "Users can report messages as a security concern.",
    "AllowGroupChatJoinLinks": "Join links for group chats.",
    "CreateCustomEmojis": "Users can create custom emojis.",
    "DeleteCustomEmojis": "Users can delete custom emojis.",
    "AllowCustomGroupChatAvatars": "Custom avatars for group chats.",
    "AllowProactiveSummaries": "Undocumented in the module reference.",
}

_ENUMS: dict[str, tuple[tuple[str, ...], str]] = {
    "ReadReceiptsEnabledType": (
        ("UserPreference", "Everyone", "None"),
        "Read receipts: User controlled, On for everyone, Off for everyone.",
    ),
    "GiphyRatingType": (("Strict", "Moderate", "NoRestriction"), "Giphy content rating."),
    "ChannelsInChatListEnabledType": (
        ("DisabledUserOverride", "EnabledUserOverride"),
        "Channels shown in the chat list.",
    ),
    "AudioMessageEnabledType": (
        ("ChatsAndChannels", "ChatsOnly", "Disabled"),
        "Voice messages.",
    ),
    "ChatPermissionRole": (("Full", "Limited", "Restricted"), "Supervised chat role."),
    "InOrganizationChatControl": (
        ("BlockingAllowed", "BlockingDisallowed"),
        "Whether users can block others in the organisation.",
    ),
    "AutoShareFilesInExternalChats": (("Enabled", "Disabled"), "Share files in external chats."),
    "DesignerForBackgroundsAndImages": (("Enabled", "Disabled"), "Designer for images."),
}


def _build() -> dict[str, Setting]:
    table: dict[str, Setting] = {
        "Description": Setting("Description", "string", doc="Free text."),
    }
    for name, doc in _BOOLS.items():
        table[name] = Setting(name, "bool", doc=doc)
    for name, (values, doc) in _ENUMS.items():
        table[name] = Setting(name, "enum", values, doc=doc)
    table["UseB2BInvitesToAddExternalUsers"] = Setting(
        "UseB2BInvitesToAddExternalUsers",
        "bool",
        doc="Add external users to chats through B2B invitations. Enabled/Disabled accepted.",
        aliases=_ENABLED_DISABLED,
    )
    table["AllowExtendedWorkInfoInSearch"] = Setting(
        "AllowExtendedWorkInfoInSearch",
        "bool",
        doc="Moved to TeamsClientConfiguration.",
        deprecated="gone from MicrosoftTeams 7.9.0 (moved to TeamsClientConfiguration)",
    )
    return table


SETTINGS: dict[str, Setting] = _build()
_BY_FOLDED = {name.casefold(): s for name, s in SETTINGS.items()}


def lookup(name: str) -> Setting | None:
    """The catalogue entry for ``name`` (exact spelling), or None."""
    return SETTINGS.get(name)


def lookup_folded(name: str) -> Setting | None:
    return _BY_FOLDED.get(name.casefold())


def suggest(name: str) -> str | None:
    """The closest known setting name, for "did you mean" messages."""
    folded = _BY_FOLDED.get(name.casefold())
    if folded:
        return folded.name
    matches = difflib.get_close_matches(name, list(SETTINGS), n=1, cutoff=0.75)
    return matches[0] if matches else None


def normalize(name: str, value: Any) -> Any:
    """The canonical form of a setting's value. Unknown settings are passed through unchanged."""
    setting = SETTINGS.get(name)
    return setting.normalize(value) if setting else value


def normalize_service_value(name: str, value: Any) -> Any:
    """Normalise a value read from the service. Never raises: an unexpected value the service
    returns is data to report, not an error to stop on."""
    setting = SETTINGS.get(name)
    if setting is None:
        return value
    try:
        return setting.normalize(value)
    except ValueError:
        return value


def settings_from_service(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a policy object as the service returned it, with non-setting fields
    dropped and known values normalised."""
    return {k: normalize_service_value(k, v) for k, v in obj.items() if is_setting_field(k)}


def values_equal(name: str, left: Any, right: Any) -> bool:
    """Compare two values of one setting the way the service does."""
    if left == right:
        return True
    setting = SETTINGS.get(name)
    if setting and setting.kind == "enum" and isinstance(left, str) and isinstance(right, str):
        return left.casefold() == right.casefold()
    if setting and setting.kind == "string":
        # The service returns null for an empty description.
        return (left or "") == (right or "")
    return False
