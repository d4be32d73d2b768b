namespace Skiff;

/// <summary>Turns typed values into the opaque bytes Skiff stores, and back.</summary>
public interface ISkiffSerializer
{
    /// <summary>Encodes a value.</summary>
    /// <exception cref="SkiffException">With <see cref="ErrorKind.SerializeFailed"/> when the value cannot be encoded.</exception>
    byte[] Serialize<T>(T value);

    /// <summary>Decodes a value.</summary>
    /// <exception cref="SkiffException">With <see cref="ErrorKind.DeserializeFailed"/> when the bytes are not a <typeparamref name="T"/>.</exception>
    T? Deserialize<T>(ReadOnlyMemory<byte> bytes);
}
