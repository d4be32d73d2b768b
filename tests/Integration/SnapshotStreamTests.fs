/// Issue 18, peer message validation: a snapshot stream is checked whole (every file, the trailer, the checksum) and
/// against the free disk before Raft sees it, so a corrupt, truncated or oversized stream is refused where it arrives
/// and never stops the member.
module Skiff.Integration.SnapshotStreamTests

open System
open System.IO
open Expecto
open Google.Protobuf
open Grpc.Net.Client
open Skiff.Core
open Skiff.Net.Protocol
open Skiff.Net.Runtime
open Skiff.Net.Storage
open Skiff.Integration.RuntimeTests

/// A genuine snapshot stream: 200 keys in a state machine of its own, checkpointed and read as the leader sends it.
let private genuineStream () =
    let dir = Path.Combine(Path.GetTempPath(), "skiff-snapstream-" + Guid.NewGuid().ToString("N"))
    try
        use kv = KvStateMachine.Open dir
        for i in 1..200 do
            kv.Apply(int64 i, 1L, Command.Insert(sprintf "k/%d" i, bytes (String('x', 100)))) |> ignore
        let info = kv.TakeSnapshot()
        use reader = kv.OpenSnapshotReader info
        let data = Array.zeroCreate<byte>(int reader.Length)
        let mutable read = 0
        while read < data.Length do
            read <- read + reader.Read(Span(data, read, data.Length - read))
        data
    finally
        Directory.Delete(dir, true)

/// Streams `data` to `node` as a leader of term 100 would, in 16 KiB chunks; returns the member's answer.
let private offer (node: SkiffServer) (data: byte[]) =
    use channel = GrpcChannel.ForAddress("http://" + node.Address)
    use call = Peer.PeerClient(channel).InstallSnapshot()
    let leader = Guid.NewGuid()
    let configuration = ConfigurationMsg()
    configuration.Members.Add(MemberMsg(Id = WireCodec.FromGuid node.Id, Address = node.Address, Voter = true))
    configuration.Members.Add(MemberMsg(Id = WireCodec.FromGuid leader, Address = "127.0.0.9:1", Voter = true))
    let meta = SnapshotMetaMsg(Index = 1000L, Term = 100L, Configuration = configuration)
    let chunks = data |> Array.chunkBySize (16 <<< 10)
    // The member may refuse a bad stream before it has all of it: its answer then ends the call, and the writes
    // still under way fail. What counts is the answer.
    try
        chunks
        |> Array.iteri (fun i chunk ->
            call.RequestStream
                .WriteAsync(
                    SnapshotChunk(
                        From = WireCodec.FromGuid leader,
                        To = WireCodec.FromGuid node.Id,
                        Term = 100L,
                        Meta = meta,
                        Data = ByteString.CopyFrom chunk,
                        Last = (i = chunks.Length - 1),
                        ClusterId = WireCodec.FromGuid node.Cluster.Id.Value
                    )
                )
                .Wait())
        call.RequestStream.CompleteAsync().Wait()
    with e when (e.GetBaseException() :? Grpc.Core.RpcException) ->
        ()
    call.ResponseAsync.Result.Ok

let tests =
    testList
        "snapshot streams"
        [ test "corrupt, truncated and garbage snapshot streams are refused where they arrive; the member keeps serving" {
              use c = cluster 1
              let node = c.Node 1
              let term = node.Term
              let genuine = genuineStream ()
              let corrupt = Array.copy genuine
              corrupt[corrupt.Length / 2] <- corrupt[corrupt.Length / 2] ^^^ 0xFFuy
              let cases =
                  [ "one byte flipped", corrupt
                    "the last 100 bytes missing", genuine[.. genuine.Length - 101]
                    "garbage", Array.init 50_000 byte ]
              for what, data in cases do
                  Expect.isFalse (offer node data) (sprintf "%s: refused" what)
                  Expect.isFalse node.Stopped.IsCompleted (sprintf "%s: the member did not stop" what)
                  Expect.equal node.Term term (sprintf "%s: Raft never saw it" what)
                  put node "still" what
                  Expect.equal (staleGet node "still") what (sprintf "%s: the member still takes writes" what)
          }

          test "the genuine stream is accepted (the control: the refusals above are the checks)" {
              use c = cluster 1
              let node = c.Node 1
              Expect.isTrue (offer node (genuineStream ())) "accepted"
              waitUntil 10.0 "Raft took the snapshot's term" (fun () -> node.Term = 100L)
          } ]
