using Google.Protobuf;
using Skiff.Core;
using Skiff.Net.Protocol;
using Skiff.Net.Storage.Ports;

namespace Skiff.Net.Runtime;

/// <summary>
/// The limits a node enforces on what it is asked to store, for every entry point: client calls (direct or forwarded
/// by another member), compare-and-swap, proposals from the embedding application, and appends from peers. Every
/// check runs before anything is proposed or written, and an over-limit request is refused with a typed error
/// (<see cref="ErrorKind.InvalidKey"/>, <see cref="ErrorKind.ValueTooLarge"/>) and has no other effect: a value that
/// does not fit the log must never reach storage, where it would be a fatal write error on every member.
/// </summary>
internal static class RequestLimits
{
    /// <summary>The longest key, in UTF-8 bytes (the storage's rule).</summary>
    public const int MaxKeyBytes = Keys.MaxKeyBytes;

    /// <summary>The default largest value, in bytes (1 MiB).</summary>
    public const int DefaultMaxValueBytes = Keys.DefaultMaxValueBytes;

    /// <summary>Room for a request's fields other than its values and key (protobuf tags, lengths, flags).</summary>
    private const int FramingBytes = 4096;

    /// <summary>The largest client request the gRPC layer reads: a compare-and-swap with an expected and a new value
    /// at the limit, a key at the limit, and framing. Larger messages are refused by gRPC before they are read
    /// (ResourceExhausted, tagged <see cref="ErrorKind.ValueTooLarge"/>).</summary>
    public static int MaxRequestBytes(int maxValueBytes) => (int)Math.Min(int.MaxValue, 2L * maxValueBytes + MaxKeyBytes + FramingBytes);

    /// <summary>Room for what wraps a command in the log (a client session's stamp: a kind byte and four integers).</summary>
    private const int WrapperBytes = 64;

    /// <summary>The largest command (CommandCodec bytes, in its session wrapper) a compare-and-swap of a key and two
    /// values at the limits encodes to; the log must take at least this much in one entry.</summary>
    public static long LargestCommandBytes(int maxValueBytes) => 4L + MaxKeyBytes + 2 * (5L + maxValueBytes) + WrapperBytes;

    /// <summary>Throws InvalidKey unless <paramref name="key"/> is valid (<see cref="KeyRules.ValidateKey"/>).</summary>
    public static void Key(string key) => KeyRules.ValidateKey(key);

    /// <summary>Throws InvalidKey unless <paramref name="prefix"/> is empty or a valid key.</summary>
    public static void Prefix(string prefix) => KeyRules.ValidatePrefix(prefix);

    /// <summary>Throws ValueTooLarge if <paramref name="length"/> is over <paramref name="maxValueBytes"/>.</summary>
    public static void Value(int length, int maxValueBytes, string what = "value")
    {
        if (length > maxValueBytes)
            throw new SkiffException(ErrorKind.ValueTooLarge, $"the {what} is {length} bytes; the limit is {maxValueBytes}");
    }

    /// <summary>Checks a put (key and value).</summary>
    public static void Put(string key, int valueLength, int maxValueBytes)
    {
        Key(key);
        Value(valueLength, maxValueBytes);
    }

    /// <summary>Checks a compare-and-swap (key, expected and new value).</summary>
    public static void CompareAndSwap(string key, int? expectedLength, int? nextLength, int maxValueBytes)
    {
        Key(key);
        if (expectedLength is { } e) Value(e, maxValueBytes, "expected value");
        if (nextLength is { } n) Value(n, maxValueBytes, "new value");
    }

    /// <summary>Throws ValueTooLarge if a command of <paramref name="commandBytes"/> would not fit one log entry
    /// (<see cref="ILogStore.MaxCommandBytes"/>): checked for every proposal, whatever its entry point.</summary>
    public static void Command(int commandBytes, int maxCommandBytes)
    {
        if (commandBytes > maxCommandBytes)
            throw new SkiffException(ErrorKind.ValueTooLarge,
                $"the command is {commandBytes} bytes encoded; a log entry holds at most {maxCommandBytes}");
    }

    /// <summary>Why a peer message carries an entry the log could not store, or null if it carries none. Such a
    /// message is dropped (and logged) rather than handed to the reducer, whose write of it would fail-stop this
    /// member.</summary>
    public static string? PeerMessage(Envelope envelope, int maxCommandBytes)
    {
        if (envelope.Message is not Message.Append a) return null;
        foreach (var e in a.Request.Entries)
        {
            var size = e.Payload switch
            {
                Payload.Command c => (long)c.Bytes.Length,
                Payload.Config c => WireCodec.ToWire(c.Configuration).CalculateSize(),
                _ => 0L,
            };
            if (size > maxCommandBytes)
                return $"entry {e.Index} from {envelope.From} is {size} bytes; a log entry holds at most {maxCommandBytes}";
        }
        return null;
    }
}
