/// Issue 18, TLS: client and peer traffic over TLS, members authenticating each other (mutual TLS, the sender of a
/// peer message is the member its certificate names), optional client certificates, rotation without a restart.
module Skiff.Integration.TlsTests

open System
open System.IO
open System.Net
open System.Net.Security
open System.Net.Sockets
open System.Security.Cryptography.X509Certificates
open Expecto
open Grpc.Core
open Grpc.Net.Client
open Skiff
open Skiff.Core
open Skiff.Net.Runtime
open Skiff.Integration.RuntimeTests
open Skiff.Integration.TestCertificates

/// The CA, each member's certificate (its IP in the SAN) and a client certificate, in one directory.
type private Pki(members: int list) =
    let dir = directory ()
    let ca = authority dir "skiff-test-ca"
    let pairs = members |> List.map (fun n -> n, issue ca dir (sprintf "member-%d" n) [ sprintf "127.0.0.%d" n ]) |> Map.ofList
    member _.Dir = dir
    member _.Ca = ca
    member _.Member n = pairs[n]
    member _.Client = issue ca dir "client" []
    member _.Tls(n: int, clientCertAuth: bool) =
        TlsOptions(CertFile = pairs[n].CertFile, KeyFile = pairs[n].KeyFile, TrustedCaFile = ca.File, ClientCertAuth = clientCertAuth)
    interface IDisposable with
        member _.Dispose() =
            try
                Directory.Delete(dir, true)
            with _ ->
                ()

/// A cluster of `n` members over TLS.
let private tlsCluster (pki: Pki) (n: int) (clientCertAuth: bool) = clusterOf 5.0 (fun i o -> o.Tls <- pki.Tls(i, clientCertAuth)) n

let private hosts (c: Cluster) = c.Running |> List.map (fun s -> IPAddress.Parse(s.Address.Split(':')[0]))

let private withClient (client: Client) (f: Client -> unit) =
    try
        f client
    finally
        client.DisposeAsync().AsTask().Wait()

/// A raw TLS channel to `node`'s peer service presenting `pair` (not the library's transport).
let private rawPeerChannel (node: SkiffServer) (pair: PemPair) =
    let handler = new System.Net.Http.SocketsHttpHandler()
    handler.SslOptions <-
        SslClientAuthenticationOptions(
            TargetHost = "skiff-peer",
            ClientCertificates = X509CertificateCollection([| pair.Certificate :> X509Certificate |]),
            RemoteCertificateValidationCallback = (fun _ _ _ _ -> true)
        )
    GrpcChannel.ForAddress("https://" + node.Address, GrpcChannelOptions(HttpHandler = handler))

/// Sends one AppendEntries of term 100 claiming to be from `sender`, announcing `fromAddress`, over `channel`.
let private sendAppend (channel: GrpcChannel) (node: SkiffServer) (sender: Guid) (fromAddress: string) =
    let peer = Skiff.Net.Protocol.Peer.PeerClient(channel)
    let headers = Metadata()
    headers.Add(PeerService.FromAddressHeader, fromAddress)
    use call = peer.Stream(headers)
    let append =
        Skiff.Net.Protocol.AppendRequestMsg(Term = 100L, Leader = WireCodec.FromGuid sender, PrevLogIndex = 0L, PrevLogTerm = 0L)
    call.RequestStream
        .WriteAsync(
            Skiff.Net.Protocol.PeerEnvelope(
                From = WireCodec.FromGuid sender,
                To = WireCodec.FromGuid node.Id,
                ClusterId = WireCodec.FromGuid node.Cluster.Id.Value,
                Append = append
            )
        )
        .Wait()
    call.RequestStream.CompleteAsync().Wait()
    call.ResponseAsync.Wait()

/// Streams a one-chunk InstallSnapshot of term 100 claiming to be from `sender`, announcing `fromAddress`; the answer.
let private sendSnapshot (channel: GrpcChannel) (node: SkiffServer) (sender: Guid) (fromAddress: string) =
    let headers = Metadata()
    headers.Add(PeerService.FromAddressHeader, fromAddress)
    use call = Skiff.Net.Protocol.Peer.PeerClient(channel).InstallSnapshot(headers)
    call.RequestStream
        .WriteAsync(
            Skiff.Net.Protocol.SnapshotChunk(
                From = WireCodec.FromGuid sender,
                To = WireCodec.FromGuid node.Id,
                Term = 100L,
                Meta = Skiff.Net.Protocol.SnapshotMetaMsg(Index = 1000L, Term = 100L),
                Data = Google.Protobuf.ByteString.CopyFrom(Array.create 64 0uy),
                Last = true,
                ClusterId = WireCodec.FromGuid node.Cluster.Id.Value
            )
        )
        .Wait()
    call.RequestStream.CompleteAsync().Wait()
    call.ResponseAsync.Result.Ok

/// The certificate `address` presents to a client that sends no server name.
let private presented (address: string) =
    let host, port = let parts = address.Split(':') in parts[0], int parts[1]
    use tcp = new TcpClient(host, port)
    use ssl = new SslStream(tcp.GetStream(), false, (fun _ _ _ _ -> true))
    ssl.AuthenticateAsClient(SslClientAuthenticationOptions(TargetHost = host))
    match ssl.RemoteCertificate with
    | null -> failtest "no certificate presented"
    | c -> new X509Certificate2(c)

/// openssl, which samples/Securing/make-certs.sh runs: installed with apt-get when missing (as root), as the fault
/// runs install their tools.
let private ensureOpenssl () =
    let has () =
        (Environment.GetEnvironmentVariable "PATH" |> Option.ofObj |> Option.defaultValue "").Split(':')
        |> Array.exists (fun d -> File.Exists(Path.Combine(d, "openssl")))
    if not (has ()) then
        for args in [ "update -qq"; "install -y -qq openssl" ] do
            use p = Diagnostics.Process.Start("apt-get", args)
            p.WaitForExit()
    if not (has ()) then
        failtest "openssl is missing and could not be installed with apt-get"

/// The README's "Securing a cluster" commands, with this test's port and directories.
let private readmeCommands (port: int) (root: string) =
    let readme = File.ReadAllText(Path.Combine(SamplesTests.repoRoot, "README.md"))
    let section = readme.Substring(readme.IndexOf "## Securing a cluster")
    let start = section.IndexOf "```sh\n" + "```sh\n".Length
    section.Substring(start, section.IndexOf("```", start) - start).Split('\n', StringSplitOptions.RemoveEmptyEntries)
    |> Array.map (fun line ->
        line
            .Replace("/tmp/skiff-certs", Path.Combine(root, "certs"))
            .Replace("--dir /tmp/s", "--dir " + Path.Combine(root, "s"))
            .Replace("9400", string port))
    |> List.ofArray

let private words (line: string) = line.Split(' ', StringSplitOptions.RemoveEmptyEntries) |> List.ofArray

let tests =
    testList
        "tls"
        [ test "Securing a cluster: the README's commands run as written" {
              ensureOpenssl ()
              let port = nextPort ()
              let root = directory ()
              let commands = readmeCommands port root
              let servers = ResizeArray<CliTests.ServeProcess>()
              try
                  let certs, rest = commands.Head, commands.Tail
                  Expect.stringStarts certs "samples/Securing/make-certs.sh" "the section starts by making certificates"
                  let script, args = List.head (words certs), List.tail (words certs)
                  use make = Diagnostics.Process.Start("bash", Path.Combine(SamplesTests.repoRoot, script) :: args)
                  make.WaitForExit()
                  Expect.equal make.ExitCode 0 "make-certs.sh succeeded"
                  for line in rest |> List.filter (fun l -> l.EndsWith " &") do
                      servers.Add(new CliTests.ServeProcess(words (line.TrimEnd('&', ' ')) |> List.tail))
                  let clientCommands = rest |> List.filter (fun l -> not (l.EndsWith " &")) |> List.map (words >> List.tail)
                  Expect.equal clientCommands.Length 2 "a put and a get"
                  // The members start together; the put goes through once they have formed.
                  CliTests.waitUntil 60.0 "the put succeeds" (fun () ->
                      let code, _, _ = CliTests.skiff clientCommands[0]
                      code = 0)
                  let code, out, err = CliTests.skiff clientCommands[1]
                  Expect.equal code 0 (sprintf "get: %s" err)
                  Expect.stringContains out "hello" "the value read back"
                  let get = clientCommands[1]
                  let without (flags: string list) =
                      let rec drop args =
                          match args with
                          | flag :: _ :: rest when List.contains flag flags -> drop rest
                          | a :: rest -> a :: drop rest
                          | [] -> []
                      drop get
                  CliTests.expectError 9 (without [ "--cert"; "--key" ]) |> ignore
                  let err = CliTests.expectError 3 (without [ "--cacert"; "--cert"; "--key" ])
                  Expect.stringContains err "TLS" "a plain client is told TLS may be the cause"
              finally
                  for s in servers do
                      (s :> IDisposable).Dispose()
                  Directory.Delete(root, true)
          }

          test "a TLS cluster of three forms, serves a TLS client through every member, and fails over" {
              use pki = new Pki([ 1; 2; 3 ])
              use c = tlsCluster pki 3 false
              withClient ((new Client(hosts c)).WithPort(c.Port).WithTls(ClientTlsOptions(CaFile = pki.Ca.File))) (fun client ->
                  client.InsertAsync("tls/a", "1").Wait()
                  let leader = c.Leader().Value
                  c.Stop(c.Nodes |> Seq.find (fun kv -> kv.Value = leader) |> fun kv -> kv.Key)
                  client.InsertAsync("tls/b", "2").Wait()
                  Expect.equal (client.GetAsync<string>("tls/a").Result) "1" "written before the failover"
                  Expect.equal (client.GetAsync<string>("tls/b").Result) "2" "written after it")
          }

          test "a plain-text client against a TLS cluster fails clearly, and a TLS client against a plain one" {
              use pki = new Pki([ 1 ])
              use c = tlsCluster pki 1 false
              withClient ((new Client(hosts c)).WithPort(c.Port).WithTimeout(TimeSpan.FromSeconds 2.0)) (fun client ->
                  let e = expectFailure [ ErrorKind.ClientConnectFailed ] "plain client" (fun () -> client.GetBytesAsync("k").Wait())
                  Expect.stringContains e.Message "TLS" "the error says TLS may be the cause")
              use plain = cluster 1
              withClient
                  ((new Client(hosts plain))
                      .WithPort(plain.Port)
                      .WithTimeout(TimeSpan.FromSeconds 2.0)
                      .WithTls(ClientTlsOptions(CaFile = pki.Ca.File)))
                  (fun client ->
                      let e = expectFailure [ ErrorKind.ClientConnectFailed ] "TLS client" (fun () -> client.GetBytesAsync("k").Wait())
                      Expect.stringContains e.Message "TLS" "the error says TLS")
          }

          test
              "peer calls, appends and snapshots: another CA's certificate is refused, a member's that does not name the sender is refused, one that does is obeyed" {
              use pki = new Pki([ 1 ])
              use c = tlsCluster pki 1 false
              let node = c.Node 1
              let term = node.Term
              use otherCa = new Pki([ 9 ])
              let stranger = Guid.NewGuid()
              let from9 = sprintf "127.0.0.9:%d" c.Port
              use foreign = rawPeerChannel node (otherCa.Member 9)
              try
                  sendAppend foreign node stranger from9
                  failtest "a certificate from another CA was accepted"
              with e ->
                  match e.GetBaseException() with
                  | :? RpcException as r -> Expect.equal r.StatusCode StatusCode.PermissionDenied "another CA: PermissionDenied"
                  | other -> failtestf "expected PermissionDenied, got %O" other
              try
                  sendSnapshot foreign node stranger from9 |> ignore
                  failtest "a snapshot under a certificate from another CA was accepted"
              with e ->
                  match e.GetBaseException() with
                  | :? RpcException as r -> Expect.equal r.StatusCode StatusCode.PermissionDenied "another CA's snapshot: PermissionDenied"
                  | other -> failtestf "expected PermissionDenied for the snapshot, got %O" other
              // Signed by the cluster's CA for 127.0.0.9, claiming to be a member at 127.0.0.8: refused.
              let nine = issue pki.Ca pki.Dir "impostor-9" [ "127.0.0.9" ]
              use impostor = rawPeerChannel node nine
              sendAppend impostor node stranger (sprintf "127.0.0.8:%d" c.Port)
              waitUntil 5.0 "the impostor's message is refused" (fun () -> node.DeniedPeerMessages = 1L)
              Expect.isFalse (sendSnapshot impostor node stranger (sprintf "127.0.0.8:%d" c.Port)) "the impostor's snapshot is refused"
              Expect.equal node.DeniedPeerMessages 2L "counted as a denied peer message"
              Expect.equal node.Term term "no forged term reached the reducer"
              Expect.equal node.Role Role.Leader "the member keeps leading"
              Expect.equal node.LatestSnapshotIndex 0L "nothing was installed"
              // The control: the same certificate speaking for its own address is believed.
              sendAppend impostor node stranger from9
              waitUntil 5.0 "the message from the member its certificate names is obeyed" (fun () -> node.Term = 100L)
          }

          test "client certificate authentication: none, or another CA's, is PermissionDenied; the CA's is served" {
              use pki = new Pki([ 1; 2 ])
              use c = tlsCluster pki 2 true
              let tls cert =
                  match cert with
                  | Some(p: PemPair) -> ClientTlsOptions(CaFile = pki.Ca.File, CertFile = p.CertFile, KeyFile = p.KeyFile)
                  | None -> ClientTlsOptions(CaFile = pki.Ca.File)
              withClient ((new Client(hosts c)).WithPort(c.Port).WithTls(tls None)) (fun client ->
                  expectFailure [ ErrorKind.PermissionDenied ] "no certificate" (fun () -> client.InsertAsync("k", "v").Wait()) |> ignore)
              use otherCa = new Pki([ 9 ])
              withClient ((new Client(hosts c)).WithPort(c.Port).WithTls(tls (Some otherCa.Client))) (fun client ->
                  expectFailure [ ErrorKind.PermissionDenied ] "another CA's certificate" (fun () -> client.InsertAsync("k", "v").Wait())
                  |> ignore)
              withClient ((new Client(hosts c)).WithPort(c.Port).WithTls(tls (Some pki.Client))) (fun client ->
                  client.InsertAsync("k", "v").Wait() // through either member: a follower forwards with its peer certificate
                  Expect.equal (client.GetAsync<string>("k").Result) "v" "served")
          }

          test "a member's certificate rotates without a restart, under load" {
              use pki = new Pki([ 1; 2; 3 ])
              use c = tlsCluster pki 3 false
              let node = c.Node 2
              let before = presented node.Address
              withClient ((new Client(hosts c)).WithPort(c.Port).WithTls(ClientTlsOptions(CaFile = pki.Ca.File))) (fun client ->
                  use stop = new Threading.CancellationTokenSource()
                  let writes =
                      Threading.Tasks.Task.Run(fun () ->
                          let mutable i = 0
                          while not stop.IsCancellationRequested do
                              client.InsertAsync(sprintf "rot/%d" (i % 50), string i).Wait()
                              i <- i + 1
                          i)
                  // A new key and certificate in the same files, as a rotation tool writes them.
                  let fresh = issue pki.Ca pki.Dir "member-2-next" [ "127.0.0.2" ]
                  File.Copy(fresh.CertFile, (pki.Member 2).CertFile, true)
                  File.Copy(fresh.KeyFile, (pki.Member 2).KeyFile, true)
                  waitUntil 10.0 "the member presents the new certificate" (fun () ->
                      (presented node.Address).Thumbprint = fresh.Certificate.Thumbprint)
                  let more = client.InsertAsync("rot/after", "yes")
                  more.Wait()
                  stop.Cancel()
                  Expect.isGreaterThan writes.Result 0 "writes went on during the rotation"
                  Expect.notEqual before.Thumbprint fresh.Certificate.Thumbprint "the certificate changed")
          } ]
