/// The data directory's side files share one format (Storage/SideFile.cs): the cluster id keeps the bytes it always
/// had, a snapshot's configuration moved to it, and a directory written before (bare protobuf) still opens.
module Skiff.Integration.SideFileTests

open System
open System.IO
open Expecto
open Skiff
open Skiff.Core
open Skiff.Net.Runtime
open Skiff.Net.Storage
open Skiff.Net.Storage.Ports
open Skiff.Integration.StorageSupport

let private configuration: Configuration =
    let id = Guid("00000000-0000-0000-0000-0000000000c1")
    { Configuration.Empty with Members = Map.ofList [ id, { Id = id; Address = "127.0.0.1:9999"; Voter = true } ] }

/// Opens a node's state machine and snapshot store in `dir`, runs `f`, closes them.
let private withSnapshots (dir: string) (f: KvStateMachineAdapter -> CheckpointSnapshotStore -> 'a) : 'a =
    use storage = NodeStorage.Open(dir, smallOptions ())
    use snapshots = new CheckpointSnapshotStore(storage.Kv, Path.Combine(dir, "snapmeta"))
    f (new KvStateMachineAdapter(storage.Kv)) snapshots

/// A directory with one snapshot at index 3 taken with `configuration`; its side file's path.
let private snapshotIn (dir: string) =
    withSnapshots dir (fun machine snapshots ->
        for i in 1L .. 3L do
            (machine :> IStateMachine).Apply(i, 1L, LogCommand.Plain(Command.Insert(sprintf "k%d" i, [| 1uy |]))) |> ignore
        (snapshots :> ISnapshotStore).Take(1L, configuration) |> ignore)
    Directory.GetFiles(Path.Combine(dir, "snapmeta"), "*.meta") |> Array.exactlyOne

let private latest (dir: string) = withSnapshots dir (fun _ snapshots -> (snapshots :> ISnapshotStore).Latest)

let tests =
    testList
        "side files"
        [ testCase "a snapshot's configuration is a side file, and one written by an older version still opens"
          <| fun () ->
              use tmp = new TempDir "side-files"
              let path = snapshotIn tmp.Path
              let written = File.ReadAllBytes path
              Expect.equal (Text.Encoding.ASCII.GetString(written, 0, 4)) "SKSM" "the side file's magic"
              Expect.equal
                  (BitConverter.ToUInt32(written, written.Length - 4))
                  (Crc32C.Compute(ReadOnlySpan(written, 0, written.Length - 4)))
                  "its checksum"
              // What versions before the shared format wrote: the bare SnapshotMetaMsg.
              let meta: SnapshotMeta = { Index = 3L; Term = 1L; Configuration = configuration }
              File.WriteAllBytes(path, Google.Protobuf.MessageExtensions.ToByteArray(WireCodec.ToWire meta))
              Expect.equal (latest tmp.Path) meta "the old file's configuration is read"
          testCase "a damaged side file is StorageCorrupted, never a wrong configuration"
          <| fun () ->
              use tmp = new TempDir "side-files"
              let path = snapshotIn tmp.Path
              let bytes = File.ReadAllBytes path
              bytes[10] <- bytes[10] ^^^ 0x01uy
              File.WriteAllBytes(path, bytes)
              let kind =
                  try
                      latest tmp.Path |> ignore
                      None
                  with :? SkiffException as e ->
                      Some e.Kind
              Expect.equal kind (Some ErrorKind.StorageCorrupted) "refused as corrupted"
          testCase "the cluster id keeps the bytes it always had: magic, version, Guid, CRC-32C"
          <| fun () ->
              use tmp = new TempDir "side-files"
              let id = Guid("01234567-89ab-cdef-0123-456789abcdef")
              ClusterIdFile.Write(tmp.Path, id)
              let expected = Array.concat [ "SKCI"B; BitConverter.GetBytes 1; id.ToByteArray() ]
              let expected = Array.append expected (BitConverter.GetBytes(Crc32C.Compute(ReadOnlySpan expected)))
              Expect.equal (File.ReadAllBytes(Path.Combine(tmp.Path, ClusterIdFile.FileName))) expected "the format of before"
              Expect.equal (ClusterIdFile.Read tmp.Path) (Nullable id) "read back" ]
