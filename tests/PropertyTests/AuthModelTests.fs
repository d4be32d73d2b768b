/// The auth model on its own (Skiff.Core.Auth and AuthCodec): the rules every member applies in log order, and the
/// encodings the log and the store carry.
module Skiff.PropertyTests.AuthModelTests

open System
open Expecto
open Skiff.Core

let private hash = Some { Iterations = 1000; Salt = [| 1uy; 2uy |]; Hash = [| 3uy; 4uy; 5uy |] }

/// Applies commands in order; fails on the first refusal.
let private applyAll (state: AuthState) (commands: AuthCommand list) =
    commands
    |> List.fold
        (fun s c ->
            match Auth.apply s c with
            | Ok next -> next
            | Error e -> failtestf "%A was refused: %s" c e)
        state

let private refused (state: AuthState) (command: AuthCommand) =
    match Auth.apply state command with
    | Ok _ -> failtestf "%A should be refused" command
    | Error reason -> reason

/// One of each command.
let private every =
    [ AuthCommand.UserAdd("root", hash)
      AuthCommand.UserGrantRole("root", Auth.RootRole)
      AuthCommand.RoleAdd "app"
      AuthCommand.RoleGrantPermission("app", { Prefix = "app/"; Write = true })
      AuthCommand.UserAdd("alice", None)
      AuthCommand.UserGrantRole("alice", "app")
      AuthCommand.UserChangePassword("alice", hash)
      AuthCommand.Enable(Array.init 32 byte)
      AuthCommand.RoleAdd "gone"
      AuthCommand.RoleRevokePermission("app", "app/")
      AuthCommand.UserRevokeRole("alice", "app")
      AuthCommand.RoleDelete "gone"
      AuthCommand.UserDelete "alice"
      AuthCommand.Disable ]

let tests =
    testList
        "auth model"
        [ testCase "every command survives the log codec, and the state the store codec"
          <| fun () ->
              for c in every do
                  match LogCommandCodec.decodeArray (LogCommandCodec.encode (LogCommand.Auth c)) with
                  | Ok(LogCommand.Auth back) -> Expect.equal back c "round trip"
                  | other -> failtestf "%A decoded as %A" c other
              let state = applyAll Auth.empty every
              match AuthCodec.decodeState (ReadOnlySpan(AuthCodec.encodeState state)) with
              | Ok back -> Expect.equal back state "state round trip"
              | Error e -> failtest e
              let mid = applyAll Auth.empty (List.take 8 every)
              match AuthCodec.decodeState (ReadOnlySpan(AuthCodec.encodeState mid)) with
              | Ok back -> Expect.equal back mid "a state with users, roles and grants"
              | Error e -> failtest e

          testProperty "decoding arbitrary bytes never throws"
          <| fun (bytes: byte array | null) ->
              let given =
                  match bytes with
                  | null -> [||]
                  | b -> b
              let withVersion = Array.append [| 1uy |] given
              AuthCodec.decodeCommand (ReadOnlySpan withVersion) |> ignore
              AuthCodec.decodeState (ReadOnlySpan withVersion) |> ignore
              LogCommandCodec.decodeArray (Array.append [| 2uy; 4uy |] withVersion) |> ignore

          testCase "every change bumps the revision; a refusal changes nothing"
          <| fun () ->
              let states = every |> List.scan (fun s c -> applyAll s [ c ]) Auth.empty
              Expect.sequenceEqual (states |> List.map (fun s -> s.Revision)) [ 0L .. int64 every.Length ] "one per change"
              let s = applyAll Auth.empty [ AuthCommand.UserAdd("bob", None) ]
              refused s (AuthCommand.UserAdd("bob", None)) |> ignore
              refused s (AuthCommand.UserGrantRole("bob", "nope")) |> ignore
              refused s (AuthCommand.RoleDelete Auth.RootRole) |> ignore
              refused s (AuthCommand.RoleAdd Auth.RootRole) |> ignore
              refused s (AuthCommand.RoleGrantPermission(Auth.RootRole, { Prefix = ""; Write = false })) |> ignore

          testCase "auth needs a root user to be enabled, and keeps one while enabled"
          <| fun () ->
              Expect.stringContains (refused Auth.empty (AuthCommand.Enable(Array.zeroCreate 32))) "root" "no users"
              let on = applyAll Auth.empty (List.take 8 every)
              Expect.isTrue on.Enabled "enabled"
              refused on (AuthCommand.UserRevokeRole("root", Auth.RootRole)) |> ignore
              refused on (AuthCommand.UserDelete "root") |> ignore
              let off = applyAll on [ AuthCommand.Disable ]
              applyAll off [ AuthCommand.UserDelete "root" ] |> ignore

          testCase "a grant covers its prefix only, and deleting a role takes it from its users"
          <| fun () ->
              let s = applyAll Auth.empty (List.take 8 every)
              Expect.isTrue (Auth.allows s "alice" Access.Write "app/x") "inside the prefix"
              Expect.isTrue (Auth.allows s "alice" Access.Read "app/") "the prefix itself"
              Expect.isFalse (Auth.allows s "alice" Access.Read "apple") "a sibling"
              Expect.isFalse (Auth.allows s "alice" Access.Read "app") "a wider prefix"
              Expect.isFalse (Auth.allows s "nobody" Access.Read "app/x") "an unknown user"
              Expect.isTrue (Auth.allows s "root" Access.Write "anything") "root"
              let s2 = applyAll s [ AuthCommand.RoleDelete "app" ]
              Expect.isFalse (s2.Users["alice"].Roles.Contains "app") "role taken from alice"
              Expect.isFalse (Auth.allows s2 "alice" Access.Read "app/x") "and its grant with it" ]
