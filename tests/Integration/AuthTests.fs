/// Issue 18, auth: users, roles and the auth switch in the replicated state; tokens; enforcement at every member.
module Skiff.Integration.AuthTests

open System
open System.Net
open System.Threading.Tasks
open Expecto
open Skiff
open Skiff.Core
open Skiff.Net.Runtime
open Skiff.Integration.RuntimeTests

let private host (s: SkiffServer) = IPAddress.Parse(s.Address.Split(':')[0])

/// A client of `node` alone (so the call enters the cluster there), signed in as `user` if given.
let private clientOf (port: int) (node: SkiffServer) (user: (string * string) option) =
    let c = (new Client([ host node ])).WithPort(port).WithTimeout(TimeSpan.FromSeconds 5.0)
    match user with
    | Some(u, p) -> c.WithCredentials(u, p)
    | None -> c

let private run (t: Task) = t.Wait()
let private dispose (c: Client) = c.DisposeAsync().AsTask().Wait()

let private denied what f = expectError [ ErrorKind.PermissionDenied ] what f

/// Who opened session `id` as `node` has applied it (None: it does not know the session).
let private owner (node: SkiffServer) (id: int64) = Option.ofObj (node.SessionOwner id)
let private unauthenticated what f = expectError [ ErrorKind.Unauthenticated ] what f

/// Users root (root role), alice (read on app/), bob (read-write on app/), carol (read on every key), then auth on.
let private setUp (port: int) (node: SkiffServer) =
    let admin = clientOf port node None
    try
        run (admin.UserAddAsync("root", "rootpw"))
        run (admin.UserGrantRoleAsync("root", "root"))
        for role, prefix, permission in
            [ "app-ro", "app/", KeyPermission.Read; "app-rw", "app/", KeyPermission.ReadWrite; "all-ro", "", KeyPermission.Read ] do
            run (admin.RoleAddAsync role)
            run (admin.RoleGrantPermissionAsync(role, prefix, permission))
        for user, role in [ "alice", "app-ro"; "bob", "app-rw"; "carol", "all-ro" ] do
            run (admin.UserAddAsync(user, user + "pw"))
            run (admin.UserGrantRoleAsync(user, role))
        run (admin.InsertBytesAsync("apple", bytes "fruit"))
        run (admin.InsertBytesAsync("app/x", bytes "1"))
        run (admin.AuthEnableAsync())
    finally
        dispose admin

/// Every role rule, for calls that enter the cluster at `node`.
let private checkRules (port: int) (node: SkiffServer) =
    let as' user = clientOf port node (Some(user, user + "pw"))
    let root = clientOf port node (Some("root", "rootpw"))
    let alice, bob, carol, nobody = as' "alice", as' "bob", as' "carol", clientOf port node None
    try
        unauthenticated "a call without a user" (fun () -> nobody.GetBytesAsync("app/x").Result |> ignore)
        unauthenticated "a write without a user" (fun () -> run (nobody.InsertBytesAsync("app/x", bytes "2")))
        Expect.equal (text (alice.GetBytesAsync("app/x").Result)) "1" "read-only role reads its prefix"
        denied "read-only role writes" (fun () -> run (alice.InsertBytesAsync("app/x", bytes "2")))
        denied "read-only role deletes" (fun () -> run (alice.RemoveAsync "app/x"))
        denied "read-only role swaps" (fun () ->
            alice.CompareAndSwapBytesAsync("app/x", Nullable(ReadOnlyMemory(bytes "1")), ReadOnlyMemory(bytes "3")).Result |> ignore)
        run (bob.InsertBytesAsync("app/y", bytes "bob"))
        Expect.equal (text (root.GetBytesAsync("app/y").Result)) "bob" "read-write role writes its prefix"
        denied "app/ does not cover the sibling apple (write)" (fun () -> run (bob.InsertBytesAsync("apple", bytes "x")))
        denied "app/ does not cover the sibling apple (read)" (fun () -> bob.GetBytesAsync("apple").Result |> ignore)
        Expect.sequenceEqual (bob.ListKeysAsync("app/").Result) [ "app/x"; "app/y" ] "listing the granted prefix"
        denied "listing a wider prefix than granted" (fun () -> bob.ListKeysAsync("app").Result |> ignore)
        denied "listing every key" (fun () -> bob.ListKeysAsync("").Result |> ignore)
        denied "the prefix list covers every key" (fun () -> bob.GetPrefixesAsync().Result |> ignore)
        Expect.contains (carol.ListKeysAsync("").Result) "apple" "a grant on '' covers every key"
        denied "read on every key is not write" (fun () -> run (carol.InsertBytesAsync("apple", bytes "x")))
        (alice.WatchAsync("app/", 0L).Result :> IAsyncDisposable).DisposeAsync().AsTask().Wait()
        denied "watch needs read on the whole prefix" (fun () -> alice.WatchAsync("ap", 0L).Result |> ignore)
        denied "watch of every key" (fun () -> alice.WatchAsync("", 0L).Result |> ignore)
        denied "non-root transfers leadership" (fun () -> bob.TransferLeadershipAsync(Nullable()).Result |> ignore)
        denied "non-root adds a user" (fun () -> run (bob.UserAddAsync("mallory", "pw")))
        denied "non-root grants itself root" (fun () -> run (bob.UserGrantRoleAsync("bob", "root")))
        denied "non-root disables auth" (fun () -> run (bob.AuthDisableAsync()))
        denied "non-root reads the auth state" (fun () -> bob.GetAuthStatusAsync().Result |> ignore)
        // A call claiming to be forwarded by a member gets no privilege from the claim.
        use claimsForwarded = new SkiffGrpcClient([ node.Address ], true, null)
        unauthenticated "a 'forwarded' call without a token" (fun () ->
            run (claimsForwarded.InsertOnceAsync("app/x", bytes "f", Nullable(), Threading.CancellationToken.None)))
        use members = (new SkiffGrpcClient([ node.Address ])).WithCredentials("bob", "bobpw")
        denied "non-root adds a member" (fun () -> run (members.AddServerAsync(Guid.NewGuid(), sprintf "127.0.0.9:%d" port)))
        denied "non-root removes a member" (fun () -> run (members.RemoveServerAsync(node.Id)))
        denied "non-root updates a member's address" (fun () -> run (members.UpdateServerAsync(node.Id, sprintf "localhost:%d" port)))
        Expect.equal (text (root.GetBytesAsync("apple").Result)) "fruit" "root reads every key"
        Expect.isTrue (root.GetAuthStatusAsync().Result.Enabled) "root reads the auth state"
    finally
        for c in [ alice; bob; carol; nobody; root ] do
            dispose c

/// The README's "Users and roles" commands: (environment, arguments, expected exit code) per line.
let private readmeAuthCommands (endpoint: string) =
    let readme = IO.File.ReadAllText(IO.Path.Combine(SamplesTests.repoRoot, "README.md"))
    let section = readme.Substring(readme.IndexOf "### Users and roles")
    let start = section.IndexOf "```sh\n" + "```sh\n".Length
    section.Substring(start, section.IndexOf("```", start) - start).Split('\n', StringSplitOptions.RemoveEmptyEntries)
    |> Array.map (fun line ->
        let command, expected =
            match line.IndexOf " # exit " with
            | -1 -> line, 0
            | i -> line.Substring(0, i), int (line.Substring(i + 8).Split(':')[0])
        let words = command.Replace("127.0.0.1:9400", endpoint).Split(' ', StringSplitOptions.RemoveEmptyEntries) |> List.ofArray
        let env, words =
            match words with
            | first :: rest when first.Contains '=' -> Some(first.Split('=')[0], first.Split('=')[1]), rest
            | _ -> None, words
        match words with
        | "skiff" :: args -> env, args, expected
        | _ -> failtestf "not a skiff command: %s" line)
    |> List.ofArray

/// Runs `skiff args` with SKIFF_PASSWORD as `env` gives it (unset otherwise); exit code, stdout, stderr.
let private skiffEnv (env: (string * string) option) (args: string list) =
    CliTests.skiffIn (env |> Option.defaultValue ("SKIFF_PASSWORD", "") |> List.singleton) None args

let tests =
    testSequenced
    <| testList
        "auth"
        [ test "every role rule holds at the leader and through a follower" {
              use c = cluster 3
              let leader = c.WaitLeader 5.0
              setUp c.Port leader
              checkRules c.Port leader
              let follower = c.Running |> List.find (fun s -> s.Role <> Role.Leader)
              waitUntil 5.0 "the follower applied auth enable" (fun () -> follower.AuthState.Enabled)
              checkRules c.Port follower
              // A watch is checked again at each change: once alice's read permission goes, her watch ends.
              let alice = clientOf c.Port follower (Some("alice", "alicepw"))
              let root = clientOf c.Port leader (Some("root", "rootpw"))
              try
                  let watch = alice.WatchAsync("app/", 0L).Result
                  run (root.InsertBytesAsync("app/w1", bytes "seen"))
                  let first = watch.RecvChangeAsync().Result
                  Expect.equal first.Key "app/w1" "alice sees a change while she may read"
                  run (root.UserRevokeRoleAsync("alice", "app-ro"))
                  run (root.InsertBytesAsync("app/w2", bytes "hidden"))
                  let e =
                      expectFailure [ ErrorKind.PermissionDenied ] "the watch after the revoke" (fun () ->
                          watch.RecvChangeAsync().Result |> ignore)
                  Expect.stringContains e.Message "any more" "says the permission went"
                  (watch :> IAsyncDisposable).DisposeAsync().AsTask().Wait()
              finally
                  dispose alice
                  dispose root
              // The embedding application's own calls are not checked; at a follower they reach the leader with a
              // token the member signs for itself.
              follower.InsertAsync("embedded/x", bytes "e").Wait()
              Expect.equal (staleGet leader "embedded/x") "e" "an embedded write through a follower"
          }

          test "a client session belongs to the user who opened it; a member's own session to the members" {
              use c = cluster 3
              let leader = c.WaitLeader 5.0
              let followerNo = c.Nodes |> Seq.find (fun kv -> kv.Value.Role <> Role.Leader) |> fun kv -> kv.Key
              let follower = c.Node followerNo
              // A write of the embedding application through the follower, while auth is off: the follower's own
              // session is opened then, belonging to nobody in particular.
              follower.InsertAsync("pre", bytes "x").Wait()
              let ownBefore = follower.KeyValue.OwnSessionId
              waitUntil 5.0 "the leader applied the follower's session" (fun () -> owner leader ownBefore = Some "")
              setUp c.Port leader
              let admin = clientOf c.Port leader (Some("root", "rootpw"))
              try
                  run (admin.UserAddAsync("erin", "erinpw"))
                  run (admin.UserGrantRoleAsync("erin", "app-rw"))
              finally
                  dispose admin
              use root = (new SkiffGrpcClient([ leader.Address ])).WithCredentials("root", "rootpw")
              waitUntil 5.0 "the follower applied auth enable" (fun () ->
                  follower.AuthState.Enabled && follower.AuthState.Users.ContainsKey "erin")
              let ct = Threading.CancellationToken.None
              let stamp id sequence = Nullable(SessionRef(id, sequence, 1L))
              let at (node: SkiffServer) user = (new SkiffGrpcClient([ node.Address ])).WithCredentials(user, user + "pw")
              use bob = at leader "bob"
              use erin = at leader "erin"
              use erinAtFollower = at follower "erin"
              let bobs = bob.OpenSessionAsync(TimeSpan.Zero).Result
              Expect.equal (owner leader bobs) (Some "bob") "the session records who opened it"
              bob.InsertOnceAsync("app/s", bytes "bob", stamp bobs 1L, ct).Wait()
              waitUntil 5.0 "the follower applied bob's session" (fun () -> owner follower bobs = Some "bob")
              for who, client in [ "at the leader", erin; "through a follower", erinAtFollower ] do
                  denied ("another user writes in bob's session " + who) (fun () ->
                      client.InsertOnceAsync("app/s", bytes "erin", stamp bobs 2L, ct).Wait())
                  denied ("another user closes bob's session " + who) (fun () -> client.CloseSessionAsync(bobs, ct).Wait())
              Expect.equal (staleGet leader "app/s") "bob" "bob's write stands"
              bob.InsertOnceAsync("app/s", bytes "bob2", stamp bobs 2L, ct).Wait()
              Expect.equal (staleGet leader "app/s") "bob2" "bob still writes in his session"
              // With auth on, the follower opens a new own session that belongs to the members: a client may not
              // write in it, though its session-less writes through that follower land in it.
              follower.InsertAsync("app/e", bytes "e").Wait()
              let own = follower.KeyValue.OwnSessionId
              Expect.notEqual own ownBefore "the session opened while auth was off is left"
              Expect.equal (owner leader own) (Some Skiff.Net.Runtime.Auth.Tokens.MemberPrincipal) "it belongs to the members"
              erinAtFollower.InsertOnceAsync("app/n", bytes "n", Nullable(), ct).Wait()
              Expect.equal (staleGet leader "app/n") "n" "a session-less write through the follower, in its own session"
              for who, client in [ "at the leader", erin; "through a follower", erinAtFollower ] do
                  denied ("a client writes in a member's own session " + who) (fun () ->
                      client.InsertOnceAsync("app/n", bytes "evil", stamp own 1_000_000L, ct).Wait())
              Expect.equal (staleGet leader "app/n") "n" "the member's session is untouched"
              // The owner is durable: the follower still knows it after a restart.
              c.Stop followerNo
              c.Nodes[followerNo] <- start (options c.Port followerNo (c.Dir followerNo) [ 1 ])
              let again = c.Node followerNo
              waitUntil 10.0 "the restarted follower applied bob's session" (fun () -> owner again bobs = Some "bob")
              use erinAgain = at again "erin"
              denied "after a restart" (fun () -> erinAgain.CloseSessionAsync(bobs, ct).Wait())
              bob.CloseSessionAsync(bobs, ct).Wait()
              root.CloseSessionAsync(own, ct).Wait() // root may close any session
              waitUntil 5.0 "both sessions closed" (fun () -> owner leader bobs = None && owner leader own = None)
          }

          test "with client certificate auth, the certificate's common name is the user, through a follower too" {
              let dir = TestCertificates.directory ()
              let ca = TestCertificates.authority dir "auth-ca"
              let pairs =
                  [ 1; 2 ]
                  |> List.map (fun n -> n, TestCertificates.issue ca dir (sprintf "member-%d" n) [ sprintf "127.0.0.%d" n ])
                  |> Map.ofList
              let tls n =
                  TlsOptions(CertFile = pairs[n].CertFile, KeyFile = pairs[n].KeyFile, TrustedCaFile = ca.File, ClientCertAuth = true)
              use c = clusterOf 5.0 (fun n o -> o.Tls <- tls n) 2
              let leader = c.WaitLeader 5.0
              let follower = c.Running |> List.find (fun s -> s.Role <> Role.Leader)
              let withCert (node: SkiffServer) (name: string) =
                  let pair = TestCertificates.issue ca dir name []
                  (new Client([ host node ]))
                      .WithPort(c.Port)
                      .WithTls(ClientTlsOptions(CaFile = ca.File, CertFile = pair.CertFile, KeyFile = pair.KeyFile))
              let admin = withCert leader "admin"
              let alice = withCert follower "alice"
              let stranger = withCert follower "stranger"
              try
                  run (admin.UserAddAsync("root", "rootpw"))
                  run (admin.UserGrantRoleAsync("root", "root"))
                  run (admin.UserAddAsync("alice", null)) // no password: certificate sign-in only
                  run (admin.RoleAddAsync "app-rw")
                  run (admin.RoleGrantPermissionAsync("app-rw", "app/", KeyPermission.ReadWrite))
                  run (admin.UserGrantRoleAsync("alice", "app-rw"))
                  run (admin.AuthEnableAsync())
                  waitUntil 5.0 "the follower applied auth enable" (fun () -> follower.AuthState.Enabled)
                  run (alice.InsertBytesAsync("app/k", bytes "v")) // forwarded to the leader with a token the follower signs
                  Expect.equal (text (alice.GetBytesAsync("app/k").Result)) "v" "alice reads it back (a linearizable read, forwarded)"
                  denied "alice's certificate grants only her roles" (fun () -> run (alice.InsertBytesAsync("other", bytes "v")))
                  unauthenticated "a certificate naming no user" (fun () -> run (stranger.InsertBytesAsync("app/k", bytes "w")))
                  unauthenticated "the admin certificate names no user either" (fun () -> run (admin.RoleAddAsync "r"))
                  unauthenticated "alice has no password" (fun () -> alice.AuthenticateAsync("alice", "").Result |> ignore)
              finally
                  for x in [ admin; alice; stranger ] do
                      dispose x
                  try
                      IO.Directory.Delete(dir, true)
                  with _ ->
                      ()
          }

          test "the README's user, role and auth commands run as written; a denied command exits 9" {
              use c = cluster 1
              let node = c.WaitLeader 5.0
              let commands = readmeAuthCommands node.Address
              Expect.isGreaterThanOrEqual commands.Length 10 "the README section has its commands"
              for env, args, expected in commands do
                  let code, out, err = skiffEnv env args
                  Expect.equal code expected (sprintf "skiff %A: stdout %s stderr %s" args out err)
                  if args = [ "--endpoints"; node.Address; "--user"; "alice:alicepw"; "get"; "app/greeting" ] then
                      Expect.stringContains out "hello" "alice reads the value"
                  if args |> List.contains "list" then
                      Expect.stringContains out "alice  app-reader" "the user list names alice's role"
              Expect.isTrue node.AuthState.Enabled "auth is on"
              let code, _, err = skiffEnv None [ "--endpoints"; node.Address; "--user"; "alice"; "get"; "app/greeting" ]
              Expect.equal code 2 (sprintf "--user without a password nor SKIFF_PASSWORD is a usage error: %s" err)
              let code, _, err = skiffEnv None [ "--endpoints"; node.Address; "--user"; "alice:wrong"; "get"; "app/greeting" ]
              Expect.equal code 9 (sprintf "a wrong password exits 9: %s" err)
              Expect.stringContains err "Unauthenticated" "and says why"
          }

          test "enabling auth needs a user with the root role" {
              use c = cluster 1
              let node = c.WaitLeader 5.0
              let admin = clientOf c.Port node None
              try
                  let e = expectFailure [ ErrorKind.InvalidArgument ] "enable without users" (fun () -> run (admin.AuthEnableAsync()))
                  Expect.stringContains e.Message "root" "says a root user is needed"
                  run (admin.UserAddAsync("root", "pw"))
                  expectError [ ErrorKind.InvalidArgument ] "enable with a root user lacking the root role" (fun () ->
                      run (admin.AuthEnableAsync()))
                  Expect.isFalse node.AuthState.Enabled "still off"
                  run (admin.UserGrantRoleAsync("root", "root"))
                  run (admin.AuthEnableAsync())
                  Expect.isTrue node.AuthState.Enabled "on once root exists"
                  unauthenticated "the admin's anonymous client is now refused" (fun () -> run (admin.RoleAddAsync "r"))
              finally
                  dispose admin
          }

          test "wrong passwords, stale, expired and forged tokens are refused" {
              use c = clusterOf 5.0 (fun _ o -> o.TokenTtl <- TimeSpan.FromSeconds 3.0) 1
              let node = c.WaitLeader 5.0
              setUp c.Port node
              let bob = clientOf c.Port node None
              let root = clientOf c.Port node (Some("root", "rootpw"))
              try
                  unauthenticated "wrong password" (fun () -> bob.AuthenticateAsync("bob", "nope").Result |> ignore)
                  unauthenticated "unknown user" (fun () -> bob.AuthenticateAsync("zed", "bobpw").Result |> ignore)
                  let token = bob.AuthenticateAsync("bob", "bobpw").Result
                  run (bob.InsertBytesAsync("app/t", bytes "1"))
                  use forged = (new SkiffGrpcClient([ node.Address ])).WithToken(token.Replace("v1.Ym9i", "v1.cm9vdA"))
                  unauthenticated "a token whose user was changed" (fun () -> run (forged.InsertAsync("app/t", bytes "2")))
                  run (root.RoleAddAsync "unrelated") // any auth change moves the revision
                  unauthenticated "a token made before an auth change" (fun () -> run (bob.InsertBytesAsync("app/t", bytes "3")))
                  let fresh = bob.AuthenticateAsync("bob", "bobpw").Result
                  run (bob.InsertBytesAsync("app/t", bytes "4"))
                  waitUntil 15.0 "the token expires" (fun () ->
                      try
                          run (bob.InsertBytesAsync("app/t", bytes "5"))
                          false
                      with e ->
                          match e.InnerException with
                          | :? SkiffException as s when s.Kind = ErrorKind.Unauthenticated -> true
                          | _ -> raise e)
                  Expect.isNonEmpty fresh "a token"
                  // WithCredentials signs in again by itself, after an auth change as after expiry.
                  run (root.InsertBytesAsync("app/t", bytes "6"))
                  run (root.RoleAddAsync "another")
                  run (root.InsertBytesAsync("app/t", bytes "7"))
                  Expect.equal (text (root.GetBytesAsync("app/t").Result)) "7" "root's writes went through"
              finally
                  dispose bob
                  dispose root
          }

          test "auth state survives restart and snapshot install, and the caught-up member enforces it" {
              use c = new Cluster(nextPort ())
              let leader, down = snappyClusterOneFollowerDown c
              setUp c.Port leader
              let authIndex = leader.AppliedIndex
              let root = clientOf c.Port leader (Some("root", "rootpw"))
              try
                  for i in 1..120 do
                      run (root.InsertBytesAsync(sprintf "pad/%d" i, bytes "x"))
              finally
                  dispose root
              let leaderNo = c.Nodes |> Seq.find (fun kv -> obj.ReferenceEquals(kv.Value, leader)) |> fun kv -> kv.Key
              awaitSnapshotPast leader (c.Dir leaderNo) (authIndex + 60L)
              c.Nodes[down] <- start (snappy (options c.Port down (c.Dir down) [ 1 ]))
              let back = c.Nodes[down]
              waitUntil 15.0 "the restarted member caught up" (fun () -> back.AppliedIndex >= leader.CommitIndex)
              Expect.isGreaterThan back.LatestSnapshotIndex authIndex "it caught up by a snapshot past the auth changes"
              Expect.isTrue back.AuthState.Enabled "auth is on there"
              Expect.equal (back.AuthState.Users.Count) 4 "its users"
              // Stale reads are served by the member itself: its own auth state decides.
              use alice = (new SkiffGrpcClient([ back.Address ])).WithCredentials("alice", "alicepw")
              Expect.equal (text (alice.GetAsync("app/x", ReadConsistency.Stale).Result)) "1" "alice reads app/ there"
              denied "alice may not read apple there" (fun () -> alice.GetAsync("apple", ReadConsistency.Stale).Result |> ignore)
              use anonymous = new SkiffGrpcClient([ back.Address ])
              unauthenticated "no user, at the caught-up member" (fun () ->
                  anonymous.GetAsync("app/x", ReadConsistency.Stale).Result |> ignore)
              // A whole-cluster restart: the store and log bring it all back.
              for n in List.ofSeq c.Nodes.Keys do
                  c.Stop n
              for n in [ 1; 2; 3 ] do
                  c.Nodes[n] <- start (snappy (options c.Port n (c.Dir n) [ 1 ]))
              let leader2 = c.WaitLeader 10.0
              Expect.isTrue leader2.AuthState.Enabled "auth is on after the restart"
              checkRules c.Port leader2
          } ]
