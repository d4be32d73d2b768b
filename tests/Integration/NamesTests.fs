/// Issue 18, names and ports: members addressed by host name with a port each (here `localhost:PORT`, all on
/// 127.0.0.1, so nothing but the port tells them apart), an advertise address apart from the bind address, and
/// `member update` moving a member to another address.
module Skiff.Integration.NamesTests

open System
open System.Net
open Expecto
open Skiff
open Skiff.Core
open Skiff.Net.Runtime
open Skiff.Integration.RuntimeTests

/// Members on 127.0.0.1, each on its own port and advertised as localhost:PORT; the nodes live in a RuntimeTests
/// cluster, which waits for leaders, keeps data directories and stops everything at the end.
type private NamedCluster() =
    let ports = Collections.Generic.Dictionary<int, int>()
    let inner = new Cluster(nextPort ())

    /// Adjusts node n's options before it starts (TLS, say).
    member val Configure: int -> SkiffServerOptions -> unit = (fun _ _ -> ()) with get, set
    member _.Port n = ports[n]
    member _.Address n = sprintf "localhost:%d" ports[n]
    member _.Node n = inner.Node n
    member _.Running = inner.Running

    /// Starts node n on `port`, joining through the members `join` by name (none: found or restart).
    member this.Start(n: int, port: int, join: int list) = this.Start(n, port, join, sprintf "localhost:%d" port)

    /// Starts node n on `port` advertising `advertise`, joining through the members `join` by name.
    member this.Start(n: int, port: int, join: int list, advertise: string) =
        ports[n] <- port
        let o = options port 1 (inner.Dir n) []
        o.AdvertiseAddress <- advertise
        o.JoinPeers <- join |> List.map this.Address |> Array.ofList
        o.NewCluster <- (if n = 1 && join.IsEmpty then Nullable true else Nullable())
        this.Configure n o
        let s = start o
        inner.Nodes[n] <- s
        s

    member _.Stop(n: int) = inner.Stop n
    member _.WaitLeader(seconds: float) = inner.WaitLeader seconds

    /// Every running node holds `expected` (id to address) as its configuration, all voters.
    member _.WaitConfiguration(expected: Map<Guid, string>, seconds: float) =
        waitUntil seconds (sprintf "every running node has the configuration %A" expected) (fun () ->
            inner.Running
            |> List.forall (fun s ->
                let members = s.Members
                members.Count = expected.Count
                && expected |> Map.forall (fun id a -> members.ContainsKey id && members[id] = struct (a, true))))

    interface IDisposable with
        member _.Dispose() = (inner :> IDisposable).Dispose()

/// Three members advertised as localhost:PORT, joined by name, each node's options adjusted by `configure`; returns
/// the cluster and its configuration.
let private namedClusterWith (configure: int -> SkiffServerOptions -> unit) =
    let c = new NamedCluster(Configure = configure)
    c.Start(1, nextPort (), []) |> ignore
    c.WaitLeader 10.0 |> ignore
    c.Start(2, nextPort (), [ 1 ]) |> ignore
    c.Start(3, nextPort (), [ 1; 2 ]) |> ignore
    let expected = Map.ofList [ for n in 1..3 -> (c.Node n).Id, c.Address n ]
    c.WaitConfiguration(expected, 20.0)
    c, expected

let private namedCluster () = namedClusterWith (fun _ _ -> ())

let private invalidAddresses =
    [ "nope"
      "localhost"
      "localhost:0"
      "localhost:65536"
      "localhost:port"
      "a b:1"
      "::1:9400"
      "127.0.1:9400"
      "1.2.3:9400"
      // Numbers in disguise: the resolver reads these as IP addresses (leading zeros as octal), not as names.
      "0x7f.0.0.1:9400"
      "127.0.0.1.5:9400"
      "010.0.0.1:9400"
      "host.123:9400"
      ":9400"
      ""
      "0.0.0.0:9400"
      "[::]:9400" ]

let tests =
    testList
        "Names"
        [ test "members advertised as localhost:PORT elect, replicate and fail over" {
              let c, expected = namedCluster ()
              use _ = c
              Expect.allEqual (c.Running |> List.map (fun s -> s.Address.StartsWith "localhost:")) true "every member is named"
              let leader = c.WaitLeader 10.0
              put leader "n/1" "one"
              for s in c.Running do
                  waitUntil 10.0 "every member applies the write" (fun () -> staleGet s "n/1" = "one")
              c.Stop([ 1..3 ] |> List.find (fun n -> c.Node n = leader))
              let next = c.WaitLeader 15.0
              Expect.notEqual next.Id leader.Id "another member leads"
              put next "n/2" "two"
              for s in c.Running do
                  waitUntil 10.0 "the survivors apply the write" (fun () -> staleGet s "n/2" = "two")
              ignore expected
          }

          test "with TLS, members named localhost are checked against their certificates' DNS names" {
              let dir = TestCertificates.directory ()
              try
                  let ca = TestCertificates.authority dir "names-ca"
                  let named = TestCertificates.issue ca dir "named" [ "localhost" ]
                  let tls (pair: TestCertificates.PemPair) =
                      TlsOptions(CertFile = pair.CertFile, KeyFile = pair.KeyFile, TrustedCaFile = ca.File)
                  let c, _ = namedClusterWith (fun _ o -> o.Tls <- tls named)
                  use _ = c
                  let leader = c.WaitLeader 10.0
                  put leader "tls/1" "over TLS by name"
                  for s in c.Running do
                      waitUntil 10.0 "every member applies the write" (fun () -> staleGet s "tls/1" = "over TLS by name")
                  // The control: a member whose certificate names only 127.0.0.1 is not accepted as localhost:PORT.
                  let ipOnly = TestCertificates.issue ca dir "ip-only" [ "127.0.0.1" ]
                  let o = options (nextPort ()) 1 (IO.Directory.CreateDirectory(IO.Path.Combine(dir, "joiner")).FullName) []
                  o.AdvertiseAddress <- sprintf "localhost:%d" o.Port
                  o.JoinPeers <- [| c.Address 1 |]
                  o.Tls <- tls ipOnly
                  o.JoinTimeout <- TimeSpan.FromSeconds 3.0
                  expectError [ ErrorKind.ClusterJoinFailed ] "a member whose certificate does not name its host" (fun () ->
                      start o |> stop)
                  let voters = (c.Node 1).Members.Values |> Seq.filter (fun struct (_, voter) -> voter) |> Seq.length
                  Expect.equal voters 3 "it never became a voter: no member could reach it under that name"
              finally
                  try
                      IO.Directory.Delete(dir, true)
                  with _ ->
                      ()
          }

          test "member update moves a member to another port; restarted there, it catches up and votes" {
              let c, expected = namedCluster ()
              use _ = c
              let leader = c.WaitLeader 10.0
              let moved = [ 1..3 ] |> List.find (fun n -> c.Node n <> leader)
              let id = (c.Node moved).Id
              put leader "m/before" "1"
              let newPort = nextPort ()
              let newAddress = sprintf "localhost:%d" newPort
              // Asked at the third member (forwarded to the leader), as an operator would. The moved member, still
              // at its old address, gets the change there too.
              let asker = c.Running |> List.find (fun s -> s <> leader && s.Id <> id)
              asker.UpdateServerAsync(id, newAddress).Wait()
              let updated = expected |> Map.add id newAddress
              c.WaitConfiguration(updated, 10.0)
              c.Stop moved
              put (c.WaitLeader 10.0) "m/while-away" "2"
              let again = c.Start(moved, newPort, [])
              Expect.equal again.Id id "the same member, with its data"
              waitUntil 15.0 "the moved member catches up at its new address" (fun () -> staleGet again "m/while-away" = "2")
              c.WaitConfiguration(updated, 10.0)
              // It votes at its new address: with one of the other two stopped, it and the last one must elect.
              c.Stop([ 1..3 ] |> List.find (fun n -> n <> moved))
              let survivor = c.WaitLeader 15.0
              put survivor "m/after" "3"
              waitUntil 10.0 "the moved member applies a write of the new majority" (fun () -> staleGet again "m/after" = "3")
          }

          test "member update refuses an unknown id, another member's address and malformed addresses" {
              let c, expected = namedCluster ()
              use _ = c
              let leader = c.WaitLeader 10.0
              let follower = c.Running |> List.find (fun s -> s <> leader)
              expectError [ ErrorKind.PeerNotFound ] "an unknown id" (fun () ->
                  follower.UpdateServerAsync(Guid.NewGuid(), "localhost:1").Wait())
              expectError [ ErrorKind.InvalidAddress ] "another member's address" (fun () ->
                  follower.UpdateServerAsync(follower.Id, leader.Address).Wait())
              use client = new SkiffGrpcClient([ follower.Address ])
              for bad in invalidAddresses do
                  expectError [ ErrorKind.InvalidAddress ] (sprintf "local update to %A" bad) (fun () ->
                      follower.UpdateServerAsync(follower.Id, bad).Wait())
                  expectError [ ErrorKind.InvalidAddress ] (sprintf "update to %A over gRPC" bad) (fun () ->
                      client.UpdateServerAsync(follower.Id, bad).Wait())
                  expectError [ ErrorKind.InvalidAddress ] (sprintf "add at %A over gRPC" bad) (fun () ->
                      client.AddServerAsync(Guid.NewGuid(), bad).Wait())
              // The same address again is a no-op that succeeds.
              client.UpdateServerAsync(follower.Id, follower.Address).Wait()
              c.WaitConfiguration(expected, 5.0)
          }

          test "an advertise address is validated before anything starts, through the facade too" {
              for bad in invalidAddresses do
                  let o = options (nextPort ()) 1 (IO.Path.GetTempPath()) []
                  o.AdvertiseAddress <- bad
                  expectError [ ErrorKind.InvalidAddress ] (sprintf "server advertising %A" bad) (fun () -> new SkiffServer(o) |> ignore)
                  let facade = SkiffOptions(AdvertiseAddress = bad, DataDirectory = IO.Path.GetTempPath())
                  expectError [ ErrorKind.InvalidAddress ] (sprintf "options advertising %A" bad) (fun () -> facade.Validate())
              // Bound to a wildcard, a node must say where it is reached.
              let wildcard = options (nextPort ()) 1 (IO.Path.GetTempPath()) []
              wildcard.Bind <- IPAddress.Any
              expectError [ ErrorKind.InvalidAddress ] "a wildcard bind without an advertise address" (fun () ->
                  new SkiffServer(wildcard) |> ignore)
              for good in [ "localhost:9400"; "skiff-0.skiff.default.svc.cluster.local:9400"; "10.0.0.1:1"; "[fd00::1]:9400" ] do
                  SkiffOptions(AdvertiseAddress = good).Validate()
          }

          test "a member restarted with another advertise address keeps its recorded one until member update (as etcd)" {
              let c, expected = namedCluster ()
              use _ = c
              let leader = c.WaitLeader 10.0
              let n = [ 1..3 ] |> List.find (fun n -> c.Node n <> leader)
              let id = (c.Node n).Id
              let port = c.Port n
              c.Stop n
              // Same port, another name: the others go on dialling the recorded address, which still reaches it.
              let again = c.Start(n, port, [], sprintf "127.0.0.1:%d" port)
              put leader "r/1" "reached at the recorded address"
              waitUntil 10.0 "the member catches up" (fun () -> staleGet again "r/1" = "reached at the recorded address")
              c.WaitConfiguration(expected, 5.0)
              Expect.equal again.Address (sprintf "127.0.0.1:%d" port) "it advertises the new one"
              // Only a replicated change moves the recorded address.
              again.UpdateServerAsync(id, again.Address).Wait()
              c.WaitConfiguration(expected |> Map.add id again.Address, 10.0)
          }

          test "in a two-member cluster an update commits: the moved member is still dialled where it runs" {
              let c = new NamedCluster()
              use _ = c
              c.Start(1, nextPort (), []) |> ignore
              c.WaitLeader 10.0 |> ignore
              c.Start(2, nextPort (), [ 1 ]) |> ignore
              let leader = c.WaitLeader 10.0
              let follower = c.Running |> List.find (fun s -> s <> leader)
              let away = sprintf "localhost:%d" (nextPort ())
              // Both voters must hold the entry: it commits only if it reaches the follower at its old address.
              use cts = new Threading.CancellationTokenSource(TimeSpan.FromSeconds 10.0)
              leader.UpdateServerAsync(follower.Id, away, cts.Token).Wait()
              put leader "two/1" "after the move"
              Expect.equal (staleGet leader "two/1") "after the move" "writes commit after the move"
          }

          test "the facade advertises a name, joins by name and reports members' endpoints" {
              let p1, p2 = nextPort (), nextPort ()
              let dir () = IO.Directory.CreateTempSubdirectory("skiff-names-").FullName
              let d1, d2 = dir (), dir ()
              let a = Builder().SetDir(d1).Port(p1).WithAdvertiseAddress(sprintf "localhost:%d" p1).NewCluster().Build()
              let b =
                  Builder()
                      .SetDir(d2)
                      .Port(p2)
                      .WithAdvertiseAddress(sprintf "localhost:%d" p2)
                      .JoinCluster([ sprintf "localhost:%d" p1 ])
                      .Build()
              // A client of members by name, each with its own port.
              let client = Client.ForEndpoints([ sprintf "localhost:%d" p2; sprintf "localhost:%d" p1 ])
              try
                  a.StartAsync().Wait()
                  b.StartAsync().Wait()
                  let members = b.GetMembersAsync().Result
                  Expect.sequenceEqual
                      (members |> Seq.map (fun m -> m.Endpoint) |> Seq.sort)
                      [ sprintf "localhost:%d" p1; sprintf "localhost:%d" p2 ]
                      "endpoints as recorded"
                  Expect.allEqual (members |> Seq.map (fun m -> m.Address)) null "a named member has no IP address"
                  Expect.allEqual (b.GetClusterAsync().Result.Values) IPAddress.None "skiff-rs's IP map: IPAddress.None for a named member"
                  Expect.equal b.AdvertisedAddress (sprintf "localhost:%d" p2) "the node's own"
                  let moved = sprintf "localhost:%d" (nextPort ())
                  a.UpdateMemberAsync(b.Id, moved).Wait()
                  waitUntil 10.0 "b learns its new recorded address" (fun () ->
                      b.GetMembersAsync().Result |> Seq.exists (fun m -> m.Id = b.Id && m.Endpoint = moved))
                  client.InsertAsync("named/k", "v").Wait()
                  Expect.equal (client.GetAsync<string>("named/k").Result) "v" "the client reads and writes by name"
                  for bad in [ "localhost"; "localhost:0"; "127.0.1:9400" ] do
                      expectError [ ErrorKind.InvalidAddress ] (sprintf "a client of %A" bad) (fun () ->
                          Client.ForEndpoints([ bad ]) |> ignore)
                  expectError [ ErrorKind.PeerNotFound ] "client update of an unknown id" (fun () ->
                      client.UpdateMemberAsync(Guid.NewGuid(), "localhost:1").Wait())
                  expectError [ ErrorKind.InvalidAddress ] "client update to a malformed address" (fun () ->
                      client.UpdateMemberAsync(b.Id, "localhost").Wait())
                  client.UpdateMemberAsync(b.Id, sprintf "localhost:%d" p2).Wait()
                  waitUntil 10.0 "b is back at its address" (fun () ->
                      a.GetMembersAsync().Result |> Seq.exists (fun m -> m.Id = b.Id && m.Endpoint = sprintf "localhost:%d" p2))
              finally
                  client.DisposeAsync().AsTask().Wait()
                  for n in [ b; a ] do
                      n.DisposeAsync().AsTask().Wait()
                  for d in [ d1; d2 ] do
                      try
                          IO.Directory.Delete(d, true)
                      with _ ->
                          ()
          } ]
