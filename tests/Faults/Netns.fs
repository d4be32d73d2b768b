/// The network the fault harness runs in: a private network namespace with only its own loopback up, and nftables
/// rules inside that namespace (and only there) that cut links between members.
///
/// How a cut works. On loopback every outgoing connection leaves from 127.0.0.1 whatever member opened it (checked
/// with `ss`: peer and forwarding connections go 127.0.0.1:ephemeral -> 127.0.0.N:port), so source addresses do not
/// tell members apart. Each member therefore runs under a uid of its own, and the rules match the sending socket's
/// uid (`meta skuid`): a connection's first packet marks its conntrack entry with the uid that opened it, so
///   - "A cannot send to B" when A opened the connection: `meta skuid A ct direction original ip daddr B drop`;
///   - and when B opened it (A answers on B's connection): `meta skuid A ct direction reply ct mark B drop`.
/// Clients (the harness itself, root) are never matched: only links between members are cut. Rules count what they
/// drop, which the partition test checks.
///
/// Safety: the parent process creates the namespace and re-executes this program inside it with `ip netns exec`;
/// every nft command is refused unless this process is verifiably inside that namespace (`ip netns identify`), so
/// the host's own firewall and interfaces are never touched.
module Skiff.Faults.Netns

open System
open System.Diagnostics
open System.IO
open System.Runtime.InteropServices

/// Runs a program with a bounded wait; returns exit code and combined output. Never throws for a failed command.
let run (file: string) (args: string list) (timeoutMs: int) : int * string =
    try
        let psi = ProcessStartInfo(file, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
        args |> List.iter psi.ArgumentList.Add
        use p = Process.Start psi
        let out = p.StandardOutput.ReadToEndAsync()
        let err = p.StandardError.ReadToEndAsync()
        if not (p.WaitForExit timeoutMs) then
            (try
                p.Kill true
             with _ ->
                 ())
            -1, sprintf "%s timed out after %d ms" file timeoutMs
        else
            p.WaitForExit()
            p.ExitCode, out.Result + err.Result
    with e ->
        -1, e.Message

let which (name: string) : string option =
    (Environment.GetEnvironmentVariable "PATH" |> string).Split(':', StringSplitOptions.RemoveEmptyEntries)
    |> Array.append [| "/usr/sbin"; "/sbin"; "/usr/bin" |]
    |> Array.map (fun d -> Path.Combine(d, name))
    |> Array.tryFind File.Exists

[<DllImport("libc", SetLastError = true)>]
extern uint32 geteuid()

let isRoot () = OperatingSystem.IsLinux() && geteuid () = 0u

/// libfaketime's preload library, if installed (Debian's `faketime` package).
let libfaketime () =
    [ "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"; "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1" ]
    |> List.tryFind File.Exists

/// Installs iproute2, nftables and faketime with apt-get when `ip` or `nft` is missing (root only). Returns notes.
let ensureTools () : string list =
    if not (isRoot ()) then
        [ "not root: cannot install iproute2/nftables" ]
    elif (which "ip").IsSome && (which "nft").IsSome && (libfaketime ()).IsSome then
        []
    elif (which "apt-get").IsNone then
        [ "apt-get not found: cannot install iproute2/nftables/faketime" ]
    else
        let u, uo = run "apt-get" [ "update"; "-qq" ] 300_000
        let i, io = run "apt-get" [ "install"; "-y"; "-qq"; "iproute2"; "nftables"; "faketime" ] 600_000
        [ if u <> 0 then
              sprintf "apt-get update failed (%d): %s" u (uo.Trim())
          if i <> 0 then
              sprintf "apt-get install failed (%d): %s" i (io.Trim()) ]

/// The environment variable that names the namespace this process was started in by its parent.
[<Literal>]
let NamespaceVariable = "SKIFF_FAULTS_NETNS"

/// Where this process runs.
type Mode =
    /// Inside the private namespace `name`: links can be cut.
    | Private of name: string
    /// On the host's loopback, no cutting (not root, no namespaces, or tools missing): kills and pauses only.
    | HostLoopback of why: string

/// Decided once: inside our namespace only if the parent said so AND the kernel agrees.
let mode: Lazy<Mode> =
    lazy
        match Environment.GetEnvironmentVariable NamespaceVariable with
        | null
        | "" -> HostLoopback "not started inside a private network namespace"
        | name ->
            let code, out = run "ip" [ "netns"; "identify"; string Environment.ProcessId ] 10_000
            if code = 0 && out.Trim() = name then
                Private name
            else
                HostLoopback(
                    sprintf "%s=%s but `ip netns identify` says %A: refusing to touch any firewall" NamespaceVariable name (out.Trim())
                )

let canCut () =
    match mode.Value with
    | Private _ -> true
    | HostLoopback _ -> false

/// Runs an nft script inside our namespace; refuses anywhere else.
let nft (script: string) : unit =
    match mode.Value with
    | HostLoopback why -> failwithf "nft refused: %s" why
    | Private _ ->
        let file = Path.GetTempFileName()
        try
            File.WriteAllText(file, script)
            let code, out = run "nft" [ "-f"; file ] 10_000
            if code <> 0 then
                failwithf "nft failed (%d): %s\n%s" code out script
        finally
            File.Delete file

let nftList () : string =
    match mode.Value with
    | HostLoopback _ -> ""
    | Private _ -> snd (run "nft" [ "list"; "table"; "inet"; "skiff_faults" ] 10_000)

/// Creates the table: conntrack marks by owner uid for each member uid, and an empty chain of cuts.
let initFirewall (uids: int list) : unit =
    let marks = uids |> List.map (fun u -> sprintf "    ct state new meta skuid %d ct mark set %d" u u) |> String.concat "\n"
    nft (
        sprintf
            "table inet skiff_faults {\n  chain cuts {\n  }\n  chain out {\n    type filter hook output priority 0; policy accept;\n%s\n    jump cuts\n  }\n}\n"
            marks
    )

/// Replaces every cut with `links`: (fromUid, toUid, toIp) = "the member with fromUid cannot send to the member
/// with toUid at toIp".
let setCuts (links: (int * int * string) list) : unit =
    let rules =
        links
        |> List.collect (fun (fromUid, toUid, toIp) ->
            [ sprintf "add rule inet skiff_faults cuts meta skuid %d ct direction original ip daddr %s counter drop" fromUid toIp
              sprintf "add rule inet skiff_faults cuts meta skuid %d ct direction reply ct mark %d counter drop" fromUid toUid ])
    nft ("flush chain inet skiff_faults cuts\n" + String.concat "\n" rules + "\n")

/// Packets dropped by the current cuts (sum of the rule counters).
let droppedPackets () : int64 =
    let text = nftList ()
    Text.RegularExpressions.Regex.Matches(text, @"counter packets (\d+)") |> Seq.sumBy (fun m -> int64 m.Groups[1].Value)

// ---------------------------------------------------------------------------------------------------------------
// The parent side: create the namespace, re-execute inside it, clean up.

/// If possible (root, `ip` works, not already inside), runs this very program inside a new private namespace and
/// returns Some exit code; None means "run here" (already inside, or no namespace possible: `notes` says why).
let reexecInside (argv: string[]) (notes: ResizeArray<string>) : int option =
    match Environment.GetEnvironmentVariable NamespaceVariable with
    | null
    | "" when isRoot () && (which "ip").IsSome && (which "nft").IsSome ->
        // Namespaces an earlier run of this harness left behind (its process was SIGKILLed before cleaning up): only
        // ours (skiff-faults-<pid>), only when that pid is gone and nothing runs inside any more.
        let _, listed = run "ip" [ "netns"; "list" ] 10_000
        for line in listed.Split('\n', StringSplitOptions.RemoveEmptyEntries) do
            let m = Text.RegularExpressions.Regex.Match(line, @"^skiff-faults-(\d+)\b")
            if m.Success then
                let alive =
                    try
                        not (Process.GetProcessById(int m.Groups[1].Value).HasExited)
                    with _ ->
                        false
                let _, inside = run "ip" [ "netns"; "pids"; "skiff-faults-" + m.Groups[1].Value ] 10_000
                if not alive && inside.Trim() = "" then
                    run "ip" [ "netns"; "del"; "skiff-faults-" + m.Groups[1].Value ] 10_000 |> ignore
        let name = sprintf "skiff-faults-%d" Environment.ProcessId
        let code, out = run "ip" [ "netns"; "add"; name ] 10_000
        if code <> 0 then
            notes.Add(sprintf "cannot create a network namespace (%s): falling back to host loopback, no partitions" (out.Trim()))
            None
        else
            let cleanup () =
                // Only processes inside our own namespace (all started by this run) are killed, by pid.
                let _, pids = run "ip" [ "netns"; "pids"; name ] 10_000
                for pid in pids.Split('\n', StringSplitOptions.RemoveEmptyEntries) do
                    match Int32.TryParse(pid.Trim()) with
                    | true, p ->
                        (try
                            (Process.GetProcessById p).Kill()
                         with _ ->
                             ())
                    | _ -> ()
                run "ip" [ "netns"; "del"; name ] 10_000 |> ignore
            try
                let up, upOut = run "ip" [ "netns"; "exec"; name; "ip"; "link"; "set"; "lo"; "up" ] 10_000
                if up <> 0 then
                    failwithf "cannot bring up loopback in %s: %s" name upOut
                let self = Environment.ProcessPath
                let entry = Reflection.Assembly.GetEntryAssembly().Location
                let command = if Path.GetFileNameWithoutExtension(self) = "dotnet" then [ self; entry ] else [ self ]
                let psi = ProcessStartInfo("ip", UseShellExecute = false)
                for a in [ "netns"; "exec"; name ] @ command @ List.ofArray argv do
                    psi.ArgumentList.Add a
                psi.Environment[NamespaceVariable] <- name
                use child = Process.Start psi
                Console.CancelKeyPress.Add(fun e -> e.Cancel <- true) // the child handles Ctrl-C; we clean up after
                child.WaitForExit()
                Some child.ExitCode
            finally
                cleanup ()
    | null
    | "" ->
        notes.Add(
            if not (isRoot ()) then
                "not root: no private network namespace; running on host loopback without partitions"
            else
                "ip/nft unavailable: running on host loopback without partitions"
        )
        None
    | _ -> None
