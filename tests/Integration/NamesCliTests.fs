/// Issue 18, names and ports, through the command line: `skiff serve --advertise-address` and `--join` by name, and
/// `skiff member update` moving a member of a cluster of `skiff serve` processes to another port.
module Skiff.Integration.NamesCliTests

open System
open System.IO
open System.Net
open Expecto
open Skiff
open Skiff.Integration.CliTests

/// `skiff serve` on 127.0.0.1:port advertised as localhost:port, joining through `join` (None: founding).
let private serveNamed (dir: string) (port: int) (join: string option) =
    new ServeProcess(serveArgs 1 port dir join @ [ "--advertise-address"; sprintf "localhost:%d" port; "--state-machine-memory-mib"; "32" ])

let tests =
    testSequenced
    <| testList
        "Names.Cli"
        [ test "skiff serve --advertise-address and --join by name; skiff member update moves a member to another port" {
              let ports = [| for _ in 1..3 -> RuntimeTests.nextPort () |]
              let root = Path.Combine(Path.GetTempPath(), "skiff-cli-names-" + Guid.NewGuid().ToString("N"))
              let dir n = Path.Combine(root, sprintf "n%d" n)
              let nodes = ResizeArray<ServeProcess>()
              let client = (new Client([ IPAddress.Loopback ])).WithPort(ports[0]).WithTimeout(TimeSpan.FromSeconds 2.0)
              let status () =
                  try
                      Some(client.GetStatusAsync().GetAwaiter().GetResult())
                  with _ ->
                      None
              let formed (addresses: string list) () =
                  match status () with
                  | Some s ->
                      (s.Members |> Seq.map (fun m -> m.Address) |> Seq.sort |> List.ofSeq) = List.sort addresses
                      && s.LeaderId.HasValue
                      && s.Members |> Seq.forall (fun m -> m.Reachable && m.Voter && m.LeaderId = s.LeaderId)
                  | None -> false
              let e = [ "--endpoints"; sprintf "127.0.0.1:%d" ports[0] ]
              let ok (args: string list) =
                  let code, out, err = skiff args
                  Expect.equal code 0 (sprintf "skiff %A: stdout %s stderr %s" args out err)
                  out
              try
                  nodes.Add(serveNamed (dir 1) ports[0] None)
                  waitUntil 30.0 "node 1 leads" (fun () -> (status () |> Option.map (fun s -> s.LeaderId.HasValue)) = Some true)
                  for n in 2..3 do
                      nodes.Add(serveNamed (dir n) ports[n - 1] (Some(sprintf "localhost:%d" ports[0])))
                  let named = [ for p in ports -> sprintf "localhost:%d" p ]
                  waitUntil 40.0 "three members, each at localhost:PORT" (formed named)
                  Expect.stringContains nodes[0].Output (sprintf "reached at localhost:%d" ports[0]) "serve logs its advertised address"
                  Expect.stringContains nodes[0].Output "state machine memory 32 MiB" "serve takes its memory budget"
                  Expect.stringContains (ok ([ "members" ] @ e)) named[2] "members lists the names"
                  // --endpoints by name, each member with its own port; the first names a port nobody serves, so
                  // the command reaches the cluster through the second.
                  let unused = RuntimeTests.nextPort ()
                  let byName = [ "--endpoints"; sprintf "localhost:%d,localhost:%d" unused ports[1] ]
                  ok ([ "put"; "named/k"; "through a name" ] @ byName) |> ignore
                  Expect.equal (ok ([ "get"; "named/k" ] @ byName)) "through a name\n" "read back by name"

                  let third = (status () |> Option.get).Members |> Seq.find (fun m -> m.Address = named[2])
                  let prefix = third.Id.ToString()[..7]
                  // Refusals: a malformed address, an unknown id, another member's address.
                  Expect.stringContains (expectError 2 ([ "member"; "update"; prefix; "nope" ] @ e)) "HOST:PORT" "malformed"
                  expectError 2 ([ "member"; "update"; prefix; "127.0.1:9400" ] @ e) |> ignore
                  expectError 5 ([ "member"; "update"; "ffffffff-0000"; "localhost:1" ] @ e) |> ignore
                  Expect.stringContains (expectError 2 ([ "member"; "update"; prefix; named[0] ] @ e)) "address" "another member's"

                  // The move: update, stop the member, start it at the new port; it catches up and the cluster is whole.
                  let moved = RuntimeTests.nextPort ()
                  let out = ok ([ "member"; "update"; prefix; sprintf "localhost:%d" moved ] @ e)
                  Expect.stringContains out (sprintf "-> localhost:%d" moved) "update reports the move"
                  nodes[2].Terminate()
                  Expect.isTrue (nodes[2].Process.WaitForExit(TimeSpan.FromSeconds 15.0)) "the member stops"
                  ok ([ "put"; "moved/k"; "written while it moved" ] @ e) |> ignore
                  // The service's usual command line but for the port: a member restarted on its directory ignores --join.
                  nodes.Add(serveNamed (dir 3) moved (Some named[0]))
                  waitUntil
                      40.0
                      "three members with the moved one at its new port"
                      (formed [ named[0]; named[1]; sprintf "localhost:%d" moved ])
                  let committed = (status () |> Option.get).Members |> Seq.map (fun m -> m.CommitIndex) |> Seq.max
                  waitUntil 20.0 "the moved member applies what was written while it moved" (fun () ->
                      match status () with
                      | Some s -> s.Members |> Seq.exists (fun m -> m.Id = third.Id && m.AppliedIndex >= committed)
                      | None -> false)
                  Expect.equal
                      (ok ([ "get"; "moved/k"; "--endpoints"; sprintf "127.0.0.1:%d" moved ]))
                      "written while it moved\n"
                      "read there"
              finally
                  client.DisposeAsync().AsTask().Wait()
                  for n in nodes do
                      (n :> IDisposable).Dispose()
                  try
                      Directory.Delete(root, true)
                  with _ ->
                      ()
          } ]
