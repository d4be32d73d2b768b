/// Issue 13, cluster identity: a cluster id made when a cluster is founded, kept by every member, carried on every
/// peer message and client call and checked; founding only when asked, so that a member that lost its data directory
/// never founds a second cluster at its old address by being restarted as usual.
module Skiff.Integration.ClusterIdentityTests

open System
open System.IO
open System.Net
open Expecto
open Skiff
open Skiff.Core
open Skiff.Net.Runtime
open Skiff.Net.Storage
open Skiff.Integration.RuntimeTests

/// Empties a data directory, as a lost disk would.
let private wipe (dir: string) =
    Directory.Delete(dir, true)
    Directory.CreateDirectory dir |> ignore

/// A client over `hosts` on `port`, disposed with the returned handle.
let private clientOf (port: int) (hosts: IPAddress list) =
    let client = (new Client(hosts)).WithPort(port).WithTimeout(TimeSpan.FromSeconds 5.0)
    client,
    { new IDisposable with
        member _.Dispose() = client.DisposeAsync().AsTask().Wait() }

/// Sends one AppendEntries of term `term` from a made-up leader to `node`, stamped with cluster `cluster`, over a raw
/// peer stream (not the library's transport).
let private sendForeignAppend (node: SkiffServer) (cluster: Guid) (term: int64) =
    use channel = Grpc.Net.Client.GrpcChannel.ForAddress("http://" + node.Address)
    let peer = Skiff.Net.Protocol.Peer.PeerClient(channel)
    use call = peer.Stream()
    let stranger = Guid.NewGuid()
    let append =
        Skiff.Net.Protocol.AppendRequestMsg(Term = term, Leader = WireCodec.FromGuid stranger, PrevLogIndex = 0L, PrevLogTerm = 0L)
    let envelope =
        Skiff.Net.Protocol.PeerEnvelope(
            From = WireCodec.FromGuid stranger,
            To = WireCodec.FromGuid node.Id,
            ClusterId = WireCodec.FromGuid cluster,
            Append = append
        )
    call.RequestStream.WriteAsync(envelope).Wait()
    call.RequestStream.CompleteAsync().Wait()
    call.ResponseAsync.Wait()

let private embeddedTests =
    testList
        "embedded"
        [ test "a peer message stamped with another cluster's id is refused; the same message stamped with this one's is obeyed" {
              use c = cluster 1
              let node = c.Node 1
              let term = node.Term
              sendForeignAppend node (Guid.NewGuid()) 100L
              waitUntil 5.0 "the message is refused" (fun () -> node.ForeignPeerMessages = 1L)
              Expect.equal node.Term term "another cluster's term never reached the reducer"
              Expect.equal node.Role Role.Leader "nor did its leader"
              // The control: the message itself would have taken effect.
              sendForeignAppend node node.Cluster.Id.Value 100L
              waitUntil 5.0 "this cluster's message is obeyed" (fun () -> node.Term = 100L)
              Expect.equal node.ForeignPeerMessages 1L "only the foreign one was refused"
          }

          test "every member keeps the id its cluster's founder made, across restarts" {
              use c = cluster 3
              let ids = c.Running |> List.map (fun s -> s.Cluster.Id)
              Expect.isTrue ids.Head.HasValue "the founder made an id"
              Expect.allEqual ids ids.Head "every member holds the founder's id"
              c.Stop 2
              let again = c.Start(2, [ 1 ])
              Expect.equal again.Cluster.Id ids.Head "the id survives a restart"
              Expect.equal (ClusterIdFile.Read(c.Dir 2)) ids.Head "and is kept in the data directory"
          }

          test
              "a member that lost its directory and founded a new cluster at its old address: each cluster keeps to itself, the old one's clients are refused there" {
              use c = cluster 3
              put (c.Node 1) "a/1" "old"
              // A term above the new cluster's first: its messages would win if anything delivered them.
              let old = c.Leader().Value
              old.TransferLeadershipAsync(Nullable()).Wait()
              let leader = c.WaitLeader 10.0
              let oldCluster = leader.Cluster.Id
              Expect.isGreaterThan leader.Term 1L "the old cluster is past term 1"
              let victim = if leader = c.Node 3 then 2 else 3
              c.Stop victim
              wipe (c.Dir victim)
              // The operator's mistake: the wiped member is started as a founder.
              let o = options c.Port victim (c.Dir victim) []
              o.NewCluster <- Nullable true
              let founded = start o
              c.Nodes[victim] <- founded
              waitUntil 10.0 "the wiped member leads its new cluster" (fun () -> founded.Role = Role.Leader)
              let term = founded.Term
              put founded "b/1" "new"
              Expect.notEqual founded.Cluster.Id oldCluster "a new cluster has a new id"
              // The old leader still lists the victim's old id at this address and keeps sending it appends.
              waitUntil 10.0 "the new cluster's member refuses the old cluster's messages" (fun () -> founded.ForeignPeerMessages >= 20L)
              Expect.equal founded.Role Role.Leader "it still leads its own cluster"
              Expect.equal founded.Term term "the old cluster's terms never reached it"
              Expect.equal (staleGet founded "a/1") "<none>" "none of the old cluster's data reached it"
              Expect.equal (staleGet founded "b/1") "new" "its own data is intact"
              let alive = c.Running |> List.filter (fun s -> s.Cluster.Id = oldCluster)
              put (alive |> List.find (fun s -> s.Role = Role.Leader)) "a/2" "still writable"

              // Clients: one that first reached the old cluster is refused by the new cluster's member.
              use expecting = (new SkiffGrpcClient([ founded.Address ])).ExpectCluster(oldCluster.Value)
              expectError [ ErrorKind.ClusterMismatch ] "a read of the old cluster at the new cluster's member" (fun () ->
                  expecting.GetAsync("a/1").Wait())
              let host (s: SkiffServer) = IPAddress.Parse(s.Address.Split(':')[0])
              let first = alive |> List.head
              let client, closing = clientOf c.Port [ host first; host founded ]
              use _ = closing
              Expect.equal (text (client.GetBytesAsync("a/1", ReadConsistency.Stale).Result)) "old" "the client learns the old cluster"
              c.Stop(c.Nodes |> Seq.find (fun kv -> kv.Value = first) |> fun kv -> kv.Key)
              expectError [ ErrorKind.ClusterMismatch ] "the client, its first member gone, at the new cluster's member" (fun () ->
                  client.GetBytesAsync("a/1", ReadConsistency.Stale).Result |> ignore)
          }

          test "a node with an empty directory, no peers and NewCluster false does not start and founds nothing" {
              let port = nextPort ()
              let dir = Path.Combine(Path.GetTempPath(), "skiff-it-" + Guid.NewGuid().ToString("N"))
              try
                  let o = options port 1 dir []
                  o.NewCluster <- Nullable false
                  let s = new SkiffServer(o)
                  expectError [ ErrorKind.ClusterInitFailed ] "start" (fun () -> s.StartAsync().Wait())
                  Expect.isTrue s.Stopped.IsCompleted "a failed start releases the directory"
                  Expect.isFalse (File.Exists(Path.Combine(dir, ClusterIdFile.FileName))) "no cluster id was made"
              finally
                  Directory.Delete(dir, true)
          }

          test "NewCluster cannot be combined with members to join" {
              let o = options (nextPort ()) 1 (Path.Combine(Path.GetTempPath(), "skiff-it-" + Guid.NewGuid().ToString("N"))) [ 2 ]
              o.NewCluster <- Nullable true
              expectError [ ErrorKind.InvalidArgument ] "create" (fun () -> (new SkiffServer(o)).DisposeAsync().AsTask().Wait())
          }

          test "a joiner whose directory belongs to another cluster is refused by this one's members" {
              use c = cluster 1
              use other = new Cluster(nextPort ())
              let dir = other.Dir 2
              ClusterIdFile.Write(dir, Guid.NewGuid()) // it learned another cluster, then stopped before any of its log
              let o = options c.Port 2 dir [ 1 ]
              let s = new SkiffServer(o)
              expectError [ ErrorKind.ClusterJoinFailed ] "join" (fun () -> s.StartAsync().Wait())
              Expect.equal (c.Node 1).Members.Count 1 "the cluster did not add it"
          } ]

let private cliTests =
    testList
        "skiff serve"
        [ test "a seed member that lost its directory and is restarted with its usual command line founds nothing; with --join it rejoins" {
              use c = new CliTests.CliCluster()
              c.Start()
              let client, closing =
                  clientOf c.Port [ IPAddress.Parse "127.0.0.1"; IPAddress.Parse "127.0.0.2"; IPAddress.Parse "127.0.0.3" ]
              use _ = closing
              client.InsertAsync("kept", "value").Wait()
              let seed = c.Nodes[0]
              seed.Process.Kill true
              seed.Process.WaitForExit()
              (seed :> IDisposable).Dispose()
              let dir = Path.Combine(c.Root, "n1")
              wipe dir
              // The usual command line: no --new-cluster (that is for the cluster's first start only), no --join.
              let usual = [ "serve"; "--dir"; dir; "--bind"; "127.0.0.1"; "--port"; string c.Port ]
              let err = CliTests.expectError 7 usual
              Expect.stringContains err "--new-cluster" "the error says how to found a cluster"
              Expect.stringContains err "--join" "and how to join one"
              Expect.isFalse (File.Exists(Path.Combine(dir, ClusterIdFile.FileName))) "no cluster was founded"
              // The documented service line names the other members: the wiped seed rejoins, replacing its old id.
              let rejoined = new CliTests.ServeProcess(CliTests.serveArgs 1 c.Port dir (Some "127.0.0.2,127.0.0.3"))
              c.Nodes[0] <- rejoined
              c.WaitFormed 3
              let alone, closingAlone = clientOf c.Port [ IPAddress.Parse "127.0.0.1" ]
              use _ = closingAlone
              Expect.equal (alone.GetAsync<string>("kept").Result) "value" "the rejoined seed serves the cluster's data"
          } ]

let tests = testList "cluster identity" [ embeddedTests; cliTests ]
