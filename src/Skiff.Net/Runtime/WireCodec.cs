using Google.Protobuf;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Skiff.Core;
using Skiff.Net.Protocol;

namespace Skiff.Net.Runtime;

/// <summary>Converts between the reducer's F# messages and the peer protocol's protobuf messages.</summary>
internal static class WireCodec
{
    /// <summary>A Guid as 16 bytes on the wire. Every peer message carries two or three member ids: their encodings
    /// are kept (ByteStrings are immutable, so one can go in any number of messages) instead of made per message.
    /// The cache is bounded; past the bound an id is encoded each time.</summary>
    public static ByteString FromGuid(Guid id)
    {
        if (Ids.TryGetValue(id, out var known)) return known;
        var bytes = UnsafeByteOperations.UnsafeWrap(id.ToByteArray()); // a fresh array, owned by the ByteString
        if (Ids.Count < MaxCachedIds) Ids.TryAdd(id, bytes);
        return bytes;
    }

    private const int MaxCachedIds = 1024;
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<Guid, ByteString> Ids = new();

    /// <summary>16 bytes on the wire as a Guid (an empty or malformed field gives Guid.Empty).</summary>
    public static Guid ToGuid(ByteString bytes) => bytes.Length == 16 ? new Guid(bytes.Span) : Guid.Empty;

    /// <summary>Encodes a configuration.</summary>
    public static ConfigurationMsg ToWire(Configuration configuration)
    {
        var msg = new ConfigurationMsg();
        foreach (var kv in configuration.Members)
            msg.Members.Add(new MemberMsg { Id = FromGuid(kv.Key), Address = kv.Value.Address, Voter = kv.Value.Voter });
        return msg;
    }

    /// <summary>Decodes a configuration.</summary>
    public static Configuration FromWire(ConfigurationMsg? msg)
    {
        if (msg is null) return Configuration.Empty;
        var members = msg.Members.Select(m =>
        {
            var id = ToGuid(m.Id);
            return Tuple.Create(id, new Member(id, m.Address, m.Voter));
        });
        return new Configuration(MapModule.OfSeq(members));
    }

    /// <summary>Encodes an entry.</summary>
    public static EntryMsg ToWire(Entry entry)
    {
        var msg = new EntryMsg { Index = entry.Index, Term = entry.Term };
        switch (entry.Payload)
        {
            case Payload.Command c: msg.Command = UnsafeByteOperations.UnsafeWrap(c.Bytes); break;
            case Payload.Config c: msg.Config = ToWire(c.Configuration); break;
            default: msg.Noop = true; break;
        }
        return msg;
    }

    /// <summary>Decodes an entry.</summary>
    public static Entry FromWire(EntryMsg msg)
    {
        Payload payload = msg.PayloadCase switch
        {
            EntryMsg.PayloadOneofCase.Command => Payload.NewCommand(OwnedBytes(msg.Command)),
            EntryMsg.PayloadOneofCase.Config => Payload.NewConfig(FromWire(msg.Config)),
            _ => Payload.Noop,
        };
        return new Entry(msg.Index, msg.Term, payload);
    }

    /// <summary>The bytes of a ByteString as an array, without a copy when the ByteString is exactly one whole
    /// array: a parsed message's bytes field is a fresh array of its own (protobuf copies out of the buffer it
    /// parses), and neither a ByteString nor an entry's command is ever written after it exists, so they can share
    /// it. A follower decodes every entry it replicates: this saves a copy of every value.</summary>
    private static byte[] OwnedBytes(ByteString bytes) =>
        System.Runtime.InteropServices.MemoryMarshal.TryGetArray(bytes.Memory, out var segment)
        && segment.Array is { } array && segment.Offset == 0 && segment.Count == array.Length
            ? array
            : bytes.ToByteArray();

    /// <summary>The entries of an append, as the reducer's list (built back to front: no iterator or enumerator).</summary>
    private static FSharpList<Entry> FromWire(Google.Protobuf.Collections.RepeatedField<EntryMsg> entries)
    {
        var list = FSharpList<Entry>.Empty;
        for (var i = entries.Count - 1; i >= 0; i--) list = FSharpList<Entry>.Cons(FromWire(entries[i]), list);
        return list;
    }

    /// <summary>Encodes snapshot metadata.</summary>
    public static SnapshotMetaMsg ToWire(SnapshotMeta meta) =>
        new() { Index = meta.Index, Term = meta.Term, Configuration = ToWire(meta.Configuration) };

    /// <summary>Decodes snapshot metadata.</summary>
    public static SnapshotMeta FromWire(SnapshotMetaMsg msg) =>
        new(msg.Index, msg.Term, FromWire(msg.Configuration));

    /// <summary>Encodes an append.</summary>
    public static AppendRequestMsg ToWire(AppendRequest ar)
    {
        var am = new AppendRequestMsg
        {
            Term = ar.Term,
            Leader = FromGuid(ar.Leader),
            PrevLogIndex = ar.PrevLogIndex,
            PrevLogTerm = ar.PrevLogTerm,
            LeaderCommit = ar.LeaderCommit,
            Round = ar.Round,
        };
        for (var rest = ar.Entries; !rest.IsEmpty; rest = rest.Tail) am.Entries.Add(ToWire(rest.Head));
        return am;
    }

    /// <summary>Encodes an envelope; Snapshot messages never travel this way (see SnapshotChunk) and give null.
    /// <paramref name="encodedAppend"/>: the envelope's append already encoded (for another follower), if any;
    /// protobuf messages are only read once built, so envelopes can share one.</summary>
    public static PeerEnvelope? ToWire(Envelope envelope, AppendRequestMsg? encodedAppend = null)
    {
        var msg = new PeerEnvelope { From = FromGuid(envelope.From), To = FromGuid(envelope.To) };
        switch (envelope.Message)
        {
            case Message.Vote v:
                var vr = v.Request;
                msg.Vote = new VoteRequestMsg
                {
                    Term = vr.Term,
                    Candidate = FromGuid(vr.Candidate),
                    LastLogIndex = vr.LastLogIndex,
                    LastLogTerm = vr.LastLogTerm,
                    PreVote = vr.PreVote,
                    Transfer = vr.Transfer,
                };
                break;
            case Message.VoteReply v:
                msg.VoteReply = new VoteReplyMsg { Term = v.Reply.Term, Granted = v.Reply.Granted, PreVote = v.Reply.PreVote };
                break;
            case Message.Append a:
                msg.Append = encodedAppend ?? ToWire(a.Request);
                break;
            case Message.AppendReply r:
                var rr = r.Reply;
                msg.AppendReply = new AppendReplyMsg
                {
                    Term = rr.Term,
                    Success = rr.Success,
                    MatchIndex = rr.MatchIndex,
                    ConflictIndex = rr.ConflictIndex,
                    HasConflictTerm = FSharpOption<long>.get_IsSome(rr.ConflictTerm),
                    ConflictTerm = FSharpOption<long>.get_IsSome(rr.ConflictTerm) ? rr.ConflictTerm!.Value : 0,
                    Round = rr.Round,
                };
                break;
            case Message.SnapshotReply s:
                msg.SnapshotReply = new SnapshotReplyMsg { Term = s.Reply.Term, MatchIndex = s.Reply.MatchIndex };
                break;
            case Message.TimeoutNow t:
                msg.TimeoutNow = t.Term;
                break;
            default:
                return null;
        }
        return msg;
    }

    /// <summary>Decodes an envelope; null for an empty or unknown message.</summary>
    public static Envelope? FromWire(PeerEnvelope msg)
    {
        Message? m = msg.MessageCase switch
        {
            PeerEnvelope.MessageOneofCase.Vote => Message.NewVote(new VoteRequest(
                msg.Vote.Term, ToGuid(msg.Vote.Candidate), msg.Vote.LastLogIndex, msg.Vote.LastLogTerm,
                msg.Vote.PreVote, msg.Vote.Transfer)),
            PeerEnvelope.MessageOneofCase.VoteReply => Message.NewVoteReply(new VoteReply(
                msg.VoteReply.Term, msg.VoteReply.Granted, msg.VoteReply.PreVote)),
            PeerEnvelope.MessageOneofCase.Append => Message.NewAppend(new AppendRequest(
                msg.Append.Term, ToGuid(msg.Append.Leader), msg.Append.PrevLogIndex, msg.Append.PrevLogTerm,
                FromWire(msg.Append.Entries), msg.Append.LeaderCommit, msg.Append.Round)),
            PeerEnvelope.MessageOneofCase.AppendReply => Message.NewAppendReply(new AppendReply(
                msg.AppendReply.Term, msg.AppendReply.Success, msg.AppendReply.MatchIndex,
                msg.AppendReply.ConflictIndex,
                msg.AppendReply.HasConflictTerm ? FSharpOption<long>.Some(msg.AppendReply.ConflictTerm) : FSharpOption<long>.None,
                msg.AppendReply.Round)),
            PeerEnvelope.MessageOneofCase.SnapshotReply => Message.NewSnapshotReply(new SnapshotReply(
                msg.SnapshotReply.Term, msg.SnapshotReply.MatchIndex)),
            PeerEnvelope.MessageOneofCase.TimeoutNow => Message.NewTimeoutNow(msg.TimeoutNow),
            _ => null,
        };
        return m is null ? null : new Envelope(ToGuid(msg.From), ToGuid(msg.To), m);
    }
}
