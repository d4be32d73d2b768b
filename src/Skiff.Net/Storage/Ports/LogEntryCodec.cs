using Google.Protobuf;
using Skiff.Core;
using Skiff.Net.Protocol;
using Skiff.Net.Runtime;

namespace Skiff.Net.Storage.Ports;

/// <summary>The one codec of a Raft entry's payload in the log: a tag byte (0 = no-op, 1 = command, 2 =
/// configuration), then the command's <c>LogCommandCodec</c> bytes or the configuration's <c>ConfigurationMsg</c>
/// protobuf. An empty payload is a no-op too. This is what a data directory's log holds; changing it is a format
/// change.</summary>
internal static class LogEntryCodec
{
    private const byte Noop = 0, Cmd = 1, Cfg = 2;

    /// <summary>The bytes <see cref="Encode"/> adds to a command: the tag.</summary>
    public const int CommandOverhead = 1;

    /// <summary>Encodes an entry for the log.</summary>
    public static LogEntry Encode(Entry e)
    {
        byte[] payload;
        switch (e.Payload)
        {
            case Payload.Command c:
                payload = new byte[c.Bytes.Length + 1];
                payload[0] = Cmd;
                c.Bytes.CopyTo(payload, 1);
                break;
            case Payload.Config c:
                var body = WireCodec.ToWire(c.Configuration).ToByteArray();
                payload = new byte[body.Length + 1];
                payload[0] = Cfg;
                body.CopyTo(payload, 1);
                break;
            default:
                payload = Array.Empty<byte>();
                break;
        }
        return new LogEntry(e.Index, e.Term, payload);
    }

    /// <summary>Decodes what <see cref="Encode"/> wrote.</summary>
    public static Entry Decode(LogEntry e)
    {
        Payload payload = e.Payload.Length == 0 || e.Payload[0] == Noop ? Payload.Noop
            : e.Payload[0] == Cmd ? Payload.NewCommand(e.Payload.AsSpan(1).ToArray())
            : Payload.NewConfig(WireCodec.FromWire(ConfigurationMsg.Parser.ParseFrom(e.Payload.AsSpan(1))));
        return new Entry(e.Index, e.Term, payload);
    }
}
