# teams-bridge PowerShell driver, protocol 1. bridge/backends/powershell.py sends this script once,
# on stdin, to `pwsh -NoLogo -NoProfile -NonInteractive -Command -`; it then serves requests until
# stdin closes.
#
# First it answers the request id "hello" with the PowerShell and MicrosoftTeams versions. Then it
# reads one JSON request per line, {"id", "cmdlet", "params", "select"?}, and answers each with
#   (an empty line)
#   <<<teams-bridge:begin:ID>>>
#   {"id": ID, "ok": true, "result": [...], "warnings": [...]}
#   or {"id": ID, "ok": false, "error": {"category", "message", "fqid"}}
#   <<<teams-bridge:end:ID>>>
# Parameters are splatted into the cmdlet: request values never become script text, so a
# Description such as "quotes" and $(Get-Date) stays data. Only the cmdlets below can be called.
#
# Errors. The MicrosoftTeams Cs* cmdlets are script-module functions, which do not inherit this
# script's $ErrorActionPreference (PowerShell/PowerShell#4568): a 403 or a throttle they write as
# a non-terminating error would otherwise come back as ok with an empty result, and an empty read
# means "absent". So every call gets -ErrorAction Stop, which sets the preference inside the
# function's own scope: any error it writes ends the call and the answer is ok:false. Error records
# that -ErrorVariable still collects after a call that did not stop are errors the module handled
# itself (an internal retry): a read (Get-*) with any of them fails all the same, since it may be
# missing rows; after a write they come back as warnings (the write went through).

$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'

$allowed = @(
    'Import-Module', 'Connect-MicrosoftTeams', 'Disconnect-MicrosoftTeams',
    'Get-CsTeamsMessagingPolicy', 'New-CsTeamsMessagingPolicy', 'Set-CsTeamsMessagingPolicy',
    'Remove-CsTeamsMessagingPolicy', 'Get-CsGroupPolicyAssignment', 'New-CsGroupPolicyAssignment',
    'Remove-CsGroupPolicyAssignment', 'Grant-CsTeamsMessagingPolicy',
    'New-CsBatchPolicyAssignmentOperation', 'Get-CsBatchPolicyAssignmentOperation',
    'Get-CsOnlineUser'
)

# PowerShell's common parameters and their aliases (bridge/catalogue.py COMMON_PARAMETERS holds the
# same list; a test checks they agree). A request never carries one: splatted, it would change the
# call itself (-WhatIf writes nothing, -ErrorAction SilentlyContinue hides a failure, -OutVariable
# overwrites this script's variables, such as $allowed). The desired file's validation refuses
# them as setting names; this refuses them again for anything that reaches the driver another
# way (a saved plan). PowerShell binds any unambiguous prefix of a parameter name or alias, so a
# key that is a prefix of one is refused too.
$reserved = @(
    'Verbose', 'vb', 'Debug', 'db', 'ErrorAction', 'ea', 'WarningAction', 'wa',
    'InformationAction', 'infa', 'ProgressAction', 'proga', 'ErrorVariable', 'ev',
    'WarningVariable', 'wv', 'InformationVariable', 'iv', 'OutVariable', 'ov', 'OutBuffer', 'ob',
    'PipelineVariable', 'pv', 'WhatIf', 'wi', 'Confirm', 'cf', 'UseTransaction', 'usetx'
)

function Find-ReservedParameter([string] $Name) {
    foreach ($word in $reserved) {
        if ($word.StartsWith($Name, [System.StringComparison]::OrdinalIgnoreCase)) { return $word }
    }
    return $null
}

function Write-Answer([string] $Id, [hashtable] $Answer) {
    # -Compress keeps the whole answer on one line; -EnumsAsStrings writes enum names, not
    # numbers; EscapeNonAscii keeps it ASCII whatever the console's code page (Windows).
    $json = ConvertTo-Json -InputObject $Answer -Depth 8 -Compress -EnumsAsStrings `
        -EscapeHandling EscapeNonAscii
    # A newline first: host output that ended without one (a progress or warning text) would
    # otherwise run into the begin marker.
    [Console]::Out.WriteLine()
    [Console]::Out.WriteLine("<<<teams-bridge:begin:$Id>>>")
    [Console]::Out.WriteLine($json)
    [Console]::Out.WriteLine("<<<teams-bridge:end:$Id>>>")
    [Console]::Out.Flush()
}

# Requests are parsed with System.Text.Json, not ConvertFrom-Json: on PowerShell 6+ that turns
# every ISO-8601-looking string into a DateTime (a Description "2024-05-01T08:00:00Z" would reach
# the cmdlet as "05/01/2024 08:00:00"), and its -DateKind String exists only from 7.5 on. Strings
# stay strings, integers become Int64 (as ConvertFrom-Json makes them), objects hashtables.
if ($PSVersionTable.PSVersion.Major -lt 7) {
    # System.Text.Json and the module's app-only sign-in need PowerShell 7 (pwsh), not 5.1. A 7.0
    # or 7.1 gets as far as the hello, whose PSVersion teams-bridge refuses (it needs 7.2+, as
    # MicrosoftTeams 6.3.0 and later do) with the version found, and doctor reports it.
    [Console]::Error.WriteLine(
        "teams-bridge needs PowerShell 7.2 or newer (pwsh); this is $($PSVersionTable.PSVersion)")
    exit 3
}
Add-Type -AssemblyName System.Text.Json

function ConvertFrom-JsonElement([System.Text.Json.JsonElement] $Element) {
    $kind = $Element.ValueKind
    if ($kind -eq [System.Text.Json.JsonValueKind]::Object) {
        $table = @{}
        foreach ($property in $Element.EnumerateObject()) {
            $table[$property.Name] = ConvertFrom-JsonElement $property.Value
        }
        return $table
    }
    if ($kind -eq [System.Text.Json.JsonValueKind]::Array) {
        $items = [System.Collections.Generic.List[object]]::new()
        foreach ($item in $Element.EnumerateArray()) { $items.Add((ConvertFrom-JsonElement $item)) }
        return , $items.ToArray()
    }
    if ($kind -eq [System.Text.Json.JsonValueKind]::String) { return $Element.GetString() }
    if ($kind -eq [System.Text.Json.JsonValueKind]::Number) {
        [long] $integer = 0
        if ($Element.TryGetInt64([ref] $integer)) { return $integer }
        return $Element.GetDouble()
    }
    if ($kind -eq [System.Text.Json.JsonValueKind]::True) { return $true }
    if ($kind -eq [System.Text.Json.JsonValueKind]::False) { return $false }
    return $null
}

function ConvertFrom-Request([string] $Text) {
    $document = [System.Text.Json.JsonDocument]::Parse($Text)
    try { return ConvertFrom-JsonElement $document.RootElement }
    finally { $document.Dispose() }
}

function Write-Failure([string] $Id, $Record) {
    Write-Answer $Id @{
        id = $Id; ok = $false
        error = @{
            category = [string] $Record.CategoryInfo.Category
            message = [string] $Record.Exception.Message
            fqid = [string] $Record.FullyQualifiedErrorId
        }
    }
}

$teams = @(Get-Module -Name MicrosoftTeams -ListAvailable | ForEach-Object { $_.Version.ToString() })
Write-Answer 'hello' @{
    id = 'hello'; ok = $true
    result = @{ protocol = 1; PSVersion = $PSVersionTable.PSVersion.ToString(); MicrosoftTeams = $teams }
}

while ($true) {
    $line = [Console]::In.ReadLine()
    if ($null -eq $line) { break }
    if ($line.Trim() -eq '') { continue }
    $id = ''
    try {
        $request = ConvertFrom-Request $line
        $id = [string] $request.id
        $cmdlet = [string] $request.cmdlet
        if ($cmdlet -notin $allowed) {
            throw [System.ArgumentException]::new("teams-bridge driver: cmdlet '$cmdlet' is not allowed")
        }
        $params = $request.params
        if ($null -eq $params) { $params = @{} }
        $refused = @($params.Keys | Where-Object { Find-ReservedParameter $_ })
        if ($refused.Count -gt 0) {
            $name = [string] $refused[0]
            Write-Answer $id @{
                id = $id; ok = $false
                error = @{
                    category = 'InvalidArgument'
                    message = "teams-bridge driver: parameter '$name' is refused: PowerShell " +
                        "would bind it as the common parameter -$(Find-ReservedParameter $name), " +
                        'which changes the call itself; no setting has this name'
                    fqid = 'ReservedParameter,teams-bridge-driver'
                }
            }
            continue
        }
        $warnings = @()
        $cmdErrors = @()
        $output = @(& $cmdlet @params -ErrorAction Stop -ErrorVariable cmdErrors `
            -WarningVariable warnings -WarningAction SilentlyContinue)
        if ($cmdErrors.Count -gt 0 -and $cmdlet -like 'Get-*') {
            # A read that met an error, even one the module says it handled, may be missing
            # rows: fail it, so nothing it left out can read as "absent".
            $record = $cmdErrors[0]
            if ($record -isnot [System.Management.Automation.ErrorRecord]) {
                $record = $record.ErrorRecord
            }
            Write-Failure $id $record
            continue
        }
        if ($request.select) { $output = @($output | Select-Object -Property $request.select) }
        $notes = @($warnings | ForEach-Object { [string] $_ })
        $notes += @($cmdErrors | ForEach-Object { "error handled inside ${cmdlet}: $([string] $_)" })
        Write-Answer $id @{ id = $id; ok = $true; result = $output; warnings = $notes }
    }
    catch {
        Write-Failure $id $_
    }
}
