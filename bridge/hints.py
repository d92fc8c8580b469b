"""What Microsoft's refusals mean and what to do about them: the directory role a 403 from the
Teams admin API asks for, and the Graph application permission per route. Kept apart from
``http`` (which only maps statuses to errors) so the advice can be read and changed in one
place."""

from __future__ import annotations

import re

# A 403 from the Teams admin API, by what was refused: a write needs Teams Administrator; a read
# is allowed to Global Reader or Teams Reader as well.
TEAMS_FORBIDDEN_WRITE = (
    "the app's service principal needs the Teams Administrator directory role to make changes: "
    "Entra admin center > Roles and administrators"
)
TEAMS_FORBIDDEN_READ = (
    "the app's service principal needs a directory role that can read Teams settings: Global "
    "Reader or Teams Reader (or Teams Administrator, which apply needs): Entra admin center > "
    "Roles and administrators"
)
# Graph application permission needed per path prefix (under /v1.0), most specific first.
GRAPH_PERMISSIONS = (
    ("/admin/teams/policy", "TeamsPolicyUserAssign.ReadWrite.All"),
    ("/admin/teams/userConfigurations", "TeamsUserConfiguration.Read.All"),
    ("/groups", "Group.Read.All"),
    ("/users/*/memberOf", "GroupMember.Read.All"),
    ("/users", "User.Read.All"),
    ("/organization", "Organization.Read.All"),
)


def graph_permission(route: str) -> str:
    path = re.sub(r"^/v1\.0|^/beta", "", route)
    for prefix, permission in GRAPH_PERMISSIONS:
        pattern = "^" + re.escape(prefix).replace(r"\*", "[^/]+")
        if re.match(pattern, path):
            return permission
    return "the Graph application permission for this request"
