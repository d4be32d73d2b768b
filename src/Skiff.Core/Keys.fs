/// The one rule set for keys, used wherever a key enters the system: the C# facade before sending, the server before
/// proposing (whichever way the call came), and the storage before writing. Keys are strings with `/` as the level
/// separator; the storage keeps its own records under names that start with NUL, so no user key may hold one.
namespace Skiff.Core

open System.Text

[<RequireQualifiedAccess>]
module Keys =
    /// The longest key, in UTF-8 bytes.
    [<Literal>]
    let MaxKeyBytes = 4096

    /// The default largest value, in bytes (1 MiB).
    [<Literal>]
    let DefaultMaxValueBytes = 1048576

    let private strictUtf8 = UTF8Encoding(false, true)

    /// Why `key` is not a valid key, or None when it is: it must be non-empty, hold no NUL character (reserved for the
    /// storage's own records), be valid UTF-16 (no unpaired surrogate) and be at most `MaxKeyBytes` bytes of UTF-8.
    let problem (key: string) : string option =
        if System.String.IsNullOrEmpty key then
            Some "a key must not be empty"
        elif key.Contains '\000' then
            Some "a key must not contain a NUL character"
        else
            match
                (try
                    Some(strictUtf8.GetByteCount key)
                 with :? EncoderFallbackException ->
                     None)
            with
            | None -> Some "the key is not valid UTF-16 (it has an unpaired surrogate)"
            | Some bytes when bytes > MaxKeyBytes -> Some(sprintf "the key is %d bytes of UTF-8; the limit is %d" bytes MaxKeyBytes)
            | Some _ -> None

    /// Why `prefix` is not a valid prefix to list or watch, or None: the empty prefix (every key) or a valid key.
    let prefixProblem (prefix: string) : string option = if prefix = "" then None else problem prefix
