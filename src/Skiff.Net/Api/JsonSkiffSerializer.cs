using System.Text.Json;

namespace Skiff;

/// <summary>The default serializer: System.Text.Json with its web defaults (camelCase, case-insensitive reads).</summary>
public sealed class JsonSkiffSerializer : ISkiffSerializer
{
    private readonly JsonSerializerOptions _options;

    /// <summary>The shared instance with web defaults.</summary>
    public static JsonSkiffSerializer Default { get; } = new(new JsonSerializerOptions(JsonSerializerDefaults.Web));

    /// <summary>A serializer with the given options.</summary>
    public JsonSkiffSerializer(JsonSerializerOptions options) => _options = options ?? throw new ArgumentNullException(nameof(options));

    /// <inheritdoc />
    public byte[] Serialize<T>(T value)
    {
        try
        {
            return JsonSerializer.SerializeToUtf8Bytes(value, _options);
        }
        catch (Exception e) when (e is JsonException or NotSupportedException or InvalidOperationException)
        {
            throw new SkiffException(ErrorKind.SerializeFailed, $"cannot serialize a {typeof(T).Name} as JSON: {e.Message}", e);
        }
    }

    /// <inheritdoc />
    public T? Deserialize<T>(ReadOnlyMemory<byte> bytes)
    {
        try
        {
            return JsonSerializer.Deserialize<T>(bytes.Span, _options);
        }
        catch (Exception e) when (e is JsonException or NotSupportedException or InvalidOperationException or ArgumentException)
        {
            throw new SkiffException(ErrorKind.DeserializeFailed, $"the stored value is not a {typeof(T).Name}: {e.Message}", e);
        }
    }
}
